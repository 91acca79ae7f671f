output "kubeconfig" {
  description = "Kubeconfig of the cluster: terraform output -raw kubeconfig > ~/.kube/vibe.yaml"
  value       = module.kapsule.kubeconfig
  sensitive   = true
}

output "ingress_ip" {
  description = "Create DNS records *.<base_domain> and <control_plane_host> (A) pointing at this address."
  value       = module.platform.ingress_ip
}

output "tenant_namespace" {
  description = "Namespace for VibeInstances."
  value       = module.platform.tenant_namespace
}
