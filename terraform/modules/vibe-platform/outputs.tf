output "ingress_ip" {
  description = "Public IP of the ingress load balancer: the target of the wildcard record *.<base_domain> (and of control_plane_host)."
  value       = try(data.kubernetes_service_v1.traefik.status[0].load_balancer[0].ingress[0].ip, null)
}

output "operator_namespace" {
  description = "Namespace of vibe-operator."
  value       = kubernetes_namespace_v1.operator.metadata[0].name
}

output "tenant_namespace" {
  description = "Namespace where VibeInstances are created."
  value       = kubernetes_namespace_v1.tenants.metadata[0].name
}
