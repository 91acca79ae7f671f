# Network: a VPC with one private network; Kapsule attaches every node to it.
resource "scaleway_vpc" "this" {
  name       = "${var.name}-vpc"
  region     = var.region
  project_id = var.project_id
  tags       = var.tags
}

resource "scaleway_vpc_private_network" "this" {
  name       = "${var.name}-nodes"
  vpc_id     = scaleway_vpc.this.id
  region     = var.region
  project_id = var.project_id
  tags       = var.tags

  ipv4_subnet {
    subnet = var.private_network_cidr
  }
}

# Kapsule with Cilium: NetworkPolicies (tenant isolation, CouchDB reachable only from its data
# plane) are enforced only by a CNI that implements them.
resource "scaleway_k8s_cluster" "this" {
  name                        = var.name
  type                        = "kapsule"
  version                     = var.kubernetes_version
  cni                         = "cilium"
  region                      = var.region
  project_id                  = var.project_id
  private_network_id          = scaleway_vpc_private_network.this.id
  delete_additional_resources = false
  tags                        = var.tags

  auto_upgrade {
    enable                        = true
    maintenance_window_start_hour = 3
    maintenance_window_day        = "sunday"
  }

  autoscaler_config {
    disable_scale_down               = false
    scale_down_delay_after_add       = "10m"
    scale_down_unneeded_time         = "10m"
    scale_down_utilization_threshold = 0.5
    expander                         = "least_waste"
    balance_similar_node_groups      = true
    ignore_daemonsets_utilization    = true
    max_graceful_termination_sec     = 600
  }
}

resource "scaleway_k8s_pool" "default" {
  cluster_id             = scaleway_k8s_cluster.this.id
  name                   = "${var.name}-default"
  node_type              = var.node_type
  zone                   = var.zone
  region                 = var.region
  size                   = var.pool_min_size
  min_size               = var.pool_min_size
  max_size               = var.pool_max_size
  autoscaling            = true
  autohealing            = true
  container_runtime      = "containerd"
  root_volume_size_in_gb = var.root_volume_size_gb
  wait_for_pool_ready    = true
  tags                   = var.tags

  lifecycle {
    # The autoscaler changes the size; Terraform must not fight it.
    ignore_changes = [size]
  }
}

# Object Storage for tenant buckets: the operator creates one bucket per VibeInstance with this
# IAM application's API key, which may use Object Storage in this project only.
resource "scaleway_iam_application" "operator" {
  name        = "${var.name}-operator"
  description = "vibe-operator: creates and deletes tenant buckets in Object Storage"
  tags        = var.tags
}

data "scaleway_account_project" "this" {
  project_id = var.project_id
}

resource "scaleway_iam_policy" "operator_object_storage" {
  name           = "${var.name}-operator-object-storage"
  description    = "Object Storage access of vibe-operator, limited to one project"
  application_id = scaleway_iam_application.operator.id
  tags           = var.tags

  rule {
    project_ids          = [data.scaleway_account_project.this.id]
    permission_set_names = ["ObjectStorageFullAccess"]
  }
}

resource "scaleway_iam_api_key" "operator" {
  application_id     = scaleway_iam_application.operator.id
  description        = "vibe-operator Object Storage key"
  default_project_id = data.scaleway_account_project.this.id
}
