output "cluster_id" {
  description = "ID of the Kapsule cluster."
  value       = scaleway_k8s_cluster.this.id
}

output "kubeconfig" {
  description = "Kubeconfig file of the cluster (admin token). Write it with `terraform output -raw kubeconfig`."
  value       = scaleway_k8s_cluster.this.kubeconfig[0].config_file
  sensitive   = true
}

output "kube_host" {
  description = "URL of the cluster's API server."
  value       = scaleway_k8s_cluster.this.kubeconfig[0].host
}

output "kube_token" {
  description = "Admin token of the cluster, for the helm and kubernetes providers."
  value       = scaleway_k8s_cluster.this.kubeconfig[0].token
  sensitive   = true
}

output "kube_ca_certificate" {
  description = "PEM CA certificate of the API server."
  value       = base64decode(scaleway_k8s_cluster.this.kubeconfig[0].cluster_ca_certificate)
}

output "private_network_id" {
  description = "ID of the VPC private network of the nodes."
  value       = scaleway_vpc_private_network.this.id
}

output "s3_endpoint" {
  description = "Object Storage endpoint of the region."
  value       = "https://s3.${var.region}.scw.cloud"
}

output "s3_access_key" {
  description = "Access key of the operator's IAM application."
  value       = scaleway_iam_api_key.operator.access_key
}

output "s3_secret_key" {
  description = "Secret key of the operator's IAM application."
  value       = scaleway_iam_api_key.operator.secret_key
  sensitive   = true
}
