# Vibe Cloud on Scaleway Kapsule: cluster, Object Storage credentials and the platform (cert-manager,
# Traefik, the vibe-operator release). Credentials come from the environment:
#   export SCW_ACCESS_KEY=... SCW_SECRET_KEY=... SCW_DEFAULT_PROJECT_ID=...
provider "scaleway" {
  region = var.region
  zone   = var.zone
}

module "kapsule" {
  source = "../../modules/kapsule"

  name   = "vibe"
  region = var.region
  zone   = var.zone
}

provider "helm" {
  kubernetes = {
    host                   = module.kapsule.kube_host
    token                  = module.kapsule.kube_token
    cluster_ca_certificate = module.kapsule.kube_ca_certificate
  }
}

provider "kubernetes" {
  host                   = module.kapsule.kube_host
  token                  = module.kapsule.kube_token
  cluster_ca_certificate = module.kapsule.kube_ca_certificate
}

module "platform" {
  source = "../../modules/vibe-platform"

  base_domain         = var.base_domain
  control_plane_host  = var.control_plane_host
  acme_email          = var.acme_email
  registration_policy = var.registration_policy
  s3_endpoint         = module.kapsule.s3_endpoint
  s3_region           = var.region
  s3_access_key       = module.kapsule.s3_access_key
  s3_secret_key       = module.kapsule.s3_secret_key
}
