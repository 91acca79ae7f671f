variable "name" {
  description = "Name prefix of every resource (cluster, pool, private network, IAM application)."
  type        = string
  default     = "vibe"
}

variable "region" {
  description = "Scaleway region of the cluster and the Object Storage (fr-par, nl-ams or pl-waw)."
  type        = string
  default     = "fr-par"
}

variable "zone" {
  description = "Scaleway zone of the node pool; must be in var.region (e.g. fr-par-1)."
  type        = string
  default     = "fr-par-1"
}

variable "project_id" {
  description = "Scaleway project that owns the resources; null uses the provider's default project."
  type        = string
  default     = null
}

variable "kubernetes_version" {
  description = "Kapsule Kubernetes version (a minor such as \"1.34\" follows its latest patch)."
  type        = string
  default     = "1.34"
}

variable "private_network_cidr" {
  description = "IPv4 subnet of the VPC private network the nodes are attached to."
  type        = string
  default     = "172.16.32.0/22"
}

variable "node_type" {
  description = "Instance type of the nodes (e.g. PRO2-S, POP2-4C-16G, DEV1-L for tests)."
  type        = string
  default     = "PRO2-S"
}

variable "pool_min_size" {
  description = "Fewest nodes the autoscaler keeps (2 keeps the operator's two replicas on separate nodes)."
  type        = number
  default     = 2
}

variable "pool_max_size" {
  description = "Most nodes the autoscaler may add; each tenant needs roughly 0.3 vCPU and 600 MiB."
  type        = number
  default     = 6
}

variable "root_volume_size_gb" {
  description = "Root volume size of each node, in GB."
  type        = number
  default     = 40
}

variable "tags" {
  description = "Tags added to every Scaleway resource that takes tags."
  type        = list(string)
  default     = ["vibe-cloud"]
}
