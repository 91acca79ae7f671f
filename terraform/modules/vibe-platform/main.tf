locals {
  restricted = {
    "pod-security.kubernetes.io/enforce"         = "restricted"
    "pod-security.kubernetes.io/enforce-version" = "latest"
  }
  operator_chart = coalesce(var.operator_chart, "${path.module}/../../../charts/vibe-operator")

  control_plane_values = var.control_plane_host == null ? "" : yamlencode({
    controlPlane = {
      publicUrl = "https://${var.control_plane_host}"
      ingress = {
        enabled       = true
        className     = "traefik"
        host          = var.control_plane_host
        clusterIssuer = "letsencrypt"
      }
    }
  })
}

resource "kubernetes_namespace_v1" "operator" {
  metadata {
    name   = var.operator_namespace
    labels = local.restricted
  }
}

resource "kubernetes_namespace_v1" "tenants" {
  metadata {
    name   = var.tenant_namespace
    labels = local.restricted
  }
}

# The operator's Object Storage credentials (read by the chart through s3.credentialsSecret).
resource "kubernetes_secret_v1" "operator_s3" {
  metadata {
    name      = "vibe-operator-s3"
    namespace = kubernetes_namespace_v1.operator.metadata[0].name
  }

  data = {
    "access-key-id"     = var.s3_access_key
    "secret-access-key" = var.s3_secret_key
  }
}

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = var.cert_manager_version
  namespace        = "cert-manager"
  create_namespace = true
  wait             = true

  values = [yamlencode({
    crds = { enabled = true }
  })]
}

# Traefik watches Ingresses in every namespace: tenant Ingresses live in tenant namespaces, and a
# controller limited to a fixed namespace list (as the original deployment had) ignores them.
resource "helm_release" "traefik" {
  name             = "traefik"
  repository       = "https://traefik.github.io/charts"
  chart            = "traefik"
  version          = var.traefik_version
  namespace        = "traefik"
  create_namespace = true
  wait             = true

  values = [yamlencode({
    ingressClass = { enabled = true, isDefaultClass = true, name = "traefik" }
    providers = {
      kubernetesIngress = {
        namespaces       = []
        publishedService = { enabled = true }
      }
      kubernetesCRD = { enabled = false }
    }
    ports = {
      web       = { redirections = { entryPoint = { to = "websecure", scheme = "https", permanent = true } } }
      websecure = { http3 = { enabled = false } }
    }
    service             = { type = "LoadBalancer" }
    deployment          = { replicas = 2 }
    podDisruptionBudget = { enabled = true, minAvailable = 1 }
  })]
}

# Let's Encrypt ClusterIssuer (HTTP-01 through Traefik); a tiny local chart so that it is applied
# after cert-manager's CRDs exist, without kubernetes_manifest's plan-time cluster access.
resource "helm_release" "cluster_issuer" {
  name      = "letsencrypt-issuer"
  chart     = "${path.module}/charts/cluster-issuer"
  namespace = "cert-manager"

  values = [yamlencode({
    name         = "letsencrypt"
    email        = var.acme_email
    server       = var.acme_server
    ingressClass = "traefik"
  })]

  depends_on = [helm_release.cert_manager, helm_release.traefik]
}

resource "helm_release" "operator" {
  name       = "vibe-operator"
  chart      = local.operator_chart
  repository = var.operator_chart_repository
  version    = var.operator_chart_version
  namespace  = kubernetes_namespace_v1.operator.metadata[0].name
  wait       = true

  values = compact([
    yamlencode({
      baseDomain      = var.base_domain
      tenantNamespace = kubernetes_namespace_v1.tenants.metadata[0].name
      registration    = { policy = var.registration_policy }
      tenants = {
        ingressClassName           = "traefik"
        clusterIssuer              = "letsencrypt"
        ingressControllerNamespace = "traefik"
      }
      s3 = {
        endpoint          = var.s3_endpoint
        region            = var.s3_region
        pathStyle         = false
        credentialsSecret = { name = kubernetes_secret_v1.operator_s3.metadata[0].name }
      }
      networkPolicy = { ingressControllerNamespace = "traefik" }
    }),
    local.control_plane_values,
    yamlencode(var.operator_values),
  ])

  depends_on = [helm_release.cluster_issuer]
}

data "kubernetes_service_v1" "traefik" {
  metadata {
    name      = "traefik"
    namespace = "traefik"
  }

  depends_on = [helm_release.traefik]
}
