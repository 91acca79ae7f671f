variable "region" {
  description = "Scaleway region (fr-par, nl-ams or pl-waw)."
  type        = string
  default     = "fr-par"
}

variable "zone" {
  description = "Scaleway zone of the nodes, in var.region."
  type        = string
  default     = "fr-par-1"
}

variable "base_domain" {
  description = "Base domain of tenant instances, e.g. vibe.example.org (instances are <name>.vibe.example.org)."
  type        = string
}

variable "control_plane_host" {
  description = "Host of the public control-plane API, e.g. cloud.vibe.example.org."
  type        = string
}

variable "acme_email" {
  description = "E-mail address for Let's Encrypt."
  type        = string
}

variable "registration_policy" {
  description = "Self-service registration: open, invite-only or closed."
  type        = string
  default     = "invite-only"
}
