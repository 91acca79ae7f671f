variable "base_domain" {
  description = "Base domain of tenant instances (<name>.<base_domain>); point a wildcard DNS record *.<base_domain> at the ingress load balancer."
  type        = string
}

variable "control_plane_host" {
  description = "Host of the public control-plane API (identity registry, registration, claims), e.g. cloud.example.org; null for no Ingress."
  type        = string
  default     = null
}

variable "acme_email" {
  description = "E-mail address registered with Let's Encrypt for the letsencrypt ClusterIssuer."
  type        = string
}

variable "acme_server" {
  description = "ACME directory; use the staging directory while testing to avoid rate limits."
  type        = string
  default     = "https://acme-v02.api.letsencrypt.org/directory"
}

variable "s3_endpoint" {
  description = "Object Storage endpoint in which the operator creates tenant buckets."
  type        = string
}

variable "s3_region" {
  description = "Object Storage region."
  type        = string
}

variable "s3_access_key" {
  description = "Access key of the operator's Object Storage credentials."
  type        = string
}

variable "s3_secret_key" {
  description = "Secret key of the operator's Object Storage credentials (stored in the Secret vibe-operator-s3, and in the Terraform state)."
  type        = string
  sensitive   = true
}

variable "registration_policy" {
  description = "Self-service registration through the control plane: open, invite-only or closed."
  type        = string
  default     = "invite-only"

  validation {
    condition     = contains(["open", "invite-only", "closed"], var.registration_policy)
    error_message = "registration_policy must be open, invite-only or closed."
  }
}

variable "operator_namespace" {
  description = "Namespace of vibe-operator."
  type        = string
  default     = "vibe-system"
}

variable "tenant_namespace" {
  description = "Namespace in which registration creates VibeInstances."
  type        = string
  default     = "vibe-tenants"
}

variable "operator_chart" {
  description = "vibe-operator chart: a local path (default: this repository's chart) or a chart name in operator_chart_repository."
  type        = string
  default     = null
}

variable "operator_chart_repository" {
  description = "Helm repository of operator_chart; null when operator_chart is a local path."
  type        = string
  default     = null
}

variable "operator_chart_version" {
  description = "Version of the vibe-operator chart when it comes from a repository."
  type        = string
  default     = null
}

variable "operator_values" {
  description = "Extra values of the vibe-operator release, merged over the ones this module sets."
  type        = any
  default     = {}
}

variable "cert_manager_version" {
  description = "Version of the cert-manager chart."
  type        = string
  default     = "v1.19.1"
}

variable "traefik_version" {
  description = "Version of the Traefik chart (the ingress controller)."
  type        = string
  default     = "37.1.1"
}
