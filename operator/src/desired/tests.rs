//! Unit tests of the desired-object builders: every field that matters for security,
//! wiring and data safety.

use super::*;
use crate::config::OperatorConfig;
use crate::crd::{BlobsSpec, DeletionPolicy, OwnerSpec, VibeInstanceSpec};
use crate::dataplane_env as envs;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const DID: &str = "did:vibe:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";

fn instance() -> VibeInstance {
    let mut i = VibeInstance::new("alice", VibeInstanceSpec::default());
    i.metadata.namespace = Some("tenants".into());
    i.metadata.uid = Some("uid-alice".into());
    i
}

fn config() -> OperatorConfig {
    let mut c = OperatorConfig {
        base_domain: "vibe.example".into(),
        ..OperatorConfig::default()
    };
    c.s3.access_key_id = "AKIA".into();
    c.s3.secret_access_key = "SECRET".into();
    c
}

fn pod(spec: &PodSpec) -> &Container {
    &spec.containers[0]
}

fn env<'a>(vars: &'a [EnvVar], name: &str) -> Option<&'a EnvVar> {
    vars.iter().find(|e| e.name == name)
}

fn assert_restricted(spec: &PodSpec) {
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    for c in &spec.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(sc.run_as_non_root, Some(true));
    }
}

#[test]
fn couchdb_config_is_single_node_authenticated_and_bounded() {
    let ini = couchdb::local_ini();
    assert!(
        ini.contains("single_node = true"),
        "system databases are created by CouchDB itself"
    );
    assert!(ini.contains("require_valid_user = true"));
    assert!(
        ini.contains("require_valid_user_except_for_up = true"),
        "probes reach /_up"
    );
    assert!(ini.contains("max_document_size = 8000000"));
    assert!(
        ini.contains("[chttpd]\nbind_address") && ini.contains("disconnect_check_msec = 500\n"),
        "abandoned queries stop within a second of the data plane's deadline: {ini}"
    );
    assert!(ini.contains("disconnect_check_jitter_msec = 250\n"));
    let cfg = config();
    let inst = instance();
    let cm = couchdb::config_map(&Inputs::new(&inst, &cfg));
    assert_eq!(cm.metadata.name.as_deref(), Some("alice-couchdb-config"));
    assert_eq!(cm.data.unwrap()["local.ini"], ini);
}

#[test]
fn couchdb_statefulset_is_restricted_persistent_and_probed() {
    let cfg = config();
    let mut inst = instance();
    inst.spec.couchdb.storage = Quantity("20Gi".into());
    inst.spec.couchdb.storage_class_name = Some("fast".into());
    let sts = couchdb::stateful_set(&Inputs::new(&inst, &cfg), None);
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.service_name.as_deref(), Some("alice-couchdb"));
    let pod_spec = spec.template.spec.as_ref().unwrap();
    assert_restricted(pod_spec);
    assert_eq!(
        pod_spec.security_context.as_ref().unwrap().fs_group,
        Some(5984)
    );
    let c = pod(pod_spec);
    assert_eq!(c.image.as_deref(), Some("couchdb:3.5.0"));
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/_up")
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/_up")
    );
    let vars = c.env.as_ref().unwrap();
    for (name, key) in [
        ("COUCHDB_USER", "username"),
        ("COUCHDB_PASSWORD", "password"),
        ("COUCHDB_SECRET", "couchdbSecret"),
        ("COUCHDB_ERLANG_COOKIE", "erlangCookie"),
    ] {
        let r = env(vars, name)
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("alice-couchdb-auth", key),
            "{name} comes from the Secret"
        );
    }
    let pvc = &spec.volume_claim_templates.as_ref().unwrap()[0];
    let pvc_spec = pvc.spec.as_ref().unwrap();
    assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        pvc_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"],
        Quantity("20Gi".into())
    );
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(
        retention.when_deleted.as_deref(),
        Some("Retain"),
        "Retain by default"
    );
    inst.spec.deletion_policy = DeletionPolicy::Delete;
    inst.spec.suspend = true;
    let sts = couchdb::stateful_set(&Inputs::new(&inst, &cfg), None);
    let spec = sts.spec.unwrap();
    assert_eq!(
        spec.persistent_volume_claim_retention_policy
            .unwrap()
            .when_deleted
            .as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.replicas, Some(0), "suspend scales to zero");
}

#[test]
fn existing_volume_claim_templates_are_kept() {
    let cfg = config();
    let mut inst = instance();
    let original = couchdb::volume_claim_template(&Inputs::new(&inst, &cfg));
    inst.spec.couchdb.storage = Quantity("50Gi".into());
    let sts = couchdb::stateful_set(
        &Inputs::new(&inst, &cfg),
        Some(std::slice::from_ref(&original)),
    );
    assert_eq!(
        sts.spec.unwrap().volume_claim_templates.unwrap(),
        vec![original],
        "immutable field is not re-derived"
    );
}

#[test]
fn headless_service_selects_couchdb() {
    let cfg = config();
    let inst = instance();
    let svc = couchdb::headless_service(&Inputs::new(&inst, &cfg));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.ports.unwrap()[0].port, 5984);
    assert_eq!(
        spec.selector.unwrap()["app.kubernetes.io/component"],
        "database"
    );
}

#[test]
fn dataplane_env_follows_the_contract_unowned() {
    let cfg = config();
    let inst = instance();
    let vars = dataplane::env_vars(&Inputs::new(&inst, &cfg));
    let value = |n: &str| env(&vars, n).and_then(|e| e.value.clone());
    let secret = |n: &str| {
        let r = env(&vars, n)
            .unwrap()
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        (r.name, r.key)
    };
    assert_eq!(value(envs::PORT).as_deref(), Some("3000"));
    assert_eq!(
        value(envs::VIBE_METRICS_ADDR).as_deref(),
        Some("0.0.0.0:9464")
    );
    assert_eq!(
        value(envs::PUBLIC_INSTANCE_URL).as_deref(),
        Some("https://alice.vibe.example")
    );
    assert_eq!(
        value(envs::COUCHDB_URL).as_deref(),
        Some("http://alice-couchdb.tenants.svc:5984")
    );
    assert_eq!(
        secret(envs::COUCHDB_PASSWORD),
        ("alice-couchdb-auth".into(), "password".into())
    );
    assert_eq!(
        value(envs::S3_BUCKET_NAME).as_deref(),
        Some("vibe-tenants-alice")
    );
    assert_eq!(value(envs::S3_FORCE_PATH_STYLE).as_deref(), Some("true"));
    assert_eq!(
        secret(envs::S3_SECRET_KEY),
        ("alice-s3".into(), "secretAccessKey".into())
    );
    assert_eq!(
        secret(envs::VIBE_CLAIM_CODE),
        ("alice-claim".into(), "claimCode".into())
    );
    assert!(env(&vars, envs::TARGET_USER_DID).is_none());
    assert!(
        vars.iter().all(|e| e.value.as_deref() != Some("SECRET")),
        "secret values never appear literally in the pod spec"
    );
    follows_the_contract(&vars);
}

/// Every variable the Deployment sets is one the data plane reads (its flags take their
/// names from the same `vibe_api::dataplane_env`), and every secret one comes from a Secret.
fn follows_the_contract(vars: &[EnvVar]) {
    for var in vars {
        assert!(
            envs::is_read(&var.name),
            "{} is set but the data plane does not read it",
            var.name
        );
        if envs::is_secret(&var.name) {
            assert!(var.value.is_none(), "{} is a literal", var.name);
            assert!(
                var.value_from
                    .as_ref()
                    .and_then(|from| from.secret_key_ref.as_ref())
                    .is_some(),
                "{} does not come from a Secret",
                var.name
            );
        }
    }
}

#[test]
fn dataplane_env_owned_with_quota() {
    let cfg = config();
    let mut inst = instance();
    inst.spec.owner = Some(OwnerSpec { did: DID.into() });
    inst.spec.blobs = Some(BlobsSpec {
        quota: Some(Quantity("10Gi".into())),
        bucket: Some("legacy-bucket".into()),
    });
    let vars = dataplane::env_vars(&Inputs::new(&inst, &cfg));
    assert_eq!(
        env(&vars, envs::TARGET_USER_DID).unwrap().value.as_deref(),
        Some(DID)
    );
    assert!(env(&vars, envs::VIBE_CLAIM_CODE).is_none());
    assert_eq!(
        env(&vars, envs::BLOB_QUOTA_BYTES).unwrap().value.as_deref(),
        Some("10737418240")
    );
    assert_eq!(
        env(&vars, envs::S3_BUCKET_NAME).unwrap().value.as_deref(),
        Some("legacy-bucket")
    );
    follows_the_contract(&vars);
}

#[test]
fn dataplane_deployment_is_restricted_probed_and_mounts_the_key() {
    let cfg = config();
    let mut inst = instance();
    inst.spec.dataplane.replicas = 2;
    let d = dataplane::deployment(&Inputs::new(&inst, &cfg));
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod_spec = spec.template.spec.as_ref().unwrap();
    assert_restricted(pod_spec);
    let c = pod(pod_spec);
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/ready")
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/health")
    );
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "token-key")
        .unwrap();
    assert_eq!(mount.mount_path, envs::TOKEN_KEY_DIR);
    let vol = pod_spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "token-key")
        .unwrap();
    assert_eq!(
        vol.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("alice-token-key")
    );
    assert_eq!(
        env(c.env.as_ref().unwrap(), envs::VIBE_SIGNING_KEY_FILE)
            .unwrap()
            .value
            .as_deref(),
        Some("/var/run/vibe/token-key/signing-key.pem")
    );
    inst.spec.suspend = true;
    assert_eq!(
        dataplane::deployment(&Inputs::new(&inst, &cfg))
            .spec
            .unwrap()
            .replicas,
        Some(0)
    );
    let svc = dataplane::service(&Inputs::new(&inst, &cfg)).spec.unwrap();
    assert_eq!(svc.ports.unwrap()[0].port, 80);
}

#[test]
fn ingress_has_tls_class_and_issuer() {
    let mut cfg = config();
    cfg.ingress_class = Some("traefik".into());
    cfg.cluster_issuer = Some("letsencrypt".into());
    let mut inst = instance();
    inst.spec
        .ingress
        .annotations
        .insert("example.com/x".into(), "y".into());
    let ing = ingress::ingress(&Inputs::new(&inst, &cfg));
    let ann = ing.metadata.annotations.unwrap();
    assert_eq!(ann[ingress::CLUSTER_ISSUER_ANNOTATION], "letsencrypt");
    assert_eq!(ann["example.com/x"], "y");
    let spec = ing.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("traefik"));
    let tls = &spec.tls.unwrap()[0];
    assert_eq!(
        tls.hosts.as_deref(),
        Some(&["alice.vibe.example".to_string()][..])
    );
    assert_eq!(tls.secret_name.as_deref(), Some("alice-tls"));
    let rule = &spec.rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("alice.vibe.example"));
    let backend = rule.http.as_ref().unwrap().paths[0]
        .backend
        .service
        .as_ref()
        .unwrap();
    assert_eq!(backend.name, "alice-dataplane");
    // Per-instance settings win; no issuer means no cert-manager annotation.
    inst.spec.host = Some("me.example.org".into());
    inst.spec.ingress.class_name = Some("nginx".into());
    inst.spec.ingress.annotations.clear();
    let ing = ingress::ingress(&Inputs::new(&inst, &OperatorConfig::default()));
    assert!(ing.metadata.annotations.is_none());
    assert_eq!(
        ing.spec.as_ref().unwrap().ingress_class_name.as_deref(),
        Some("nginx")
    );
    assert_eq!(
        ing.spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some("me.example.org")
    );
}

#[test]
fn network_policies_isolate_couchdb_and_the_data_plane() {
    let cfg = config();
    let inst = instance();
    let inputs = Inputs::new(&inst, &cfg);
    let np = network::couchdb_policy(&inputs).spec.unwrap();
    assert_eq!(
        np.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/component"],
        "database"
    );
    assert_eq!(
        np.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    let rules = np.ingress.unwrap();
    assert_eq!(rules.len(), 1);
    let peers = rules[0].from.as_ref().unwrap();
    let peer = peers[0]
        .pod_selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(peer["app.kubernetes.io/instance"], "alice");
    assert_eq!(peer["app.kubernetes.io/component"], "dataplane");
    assert!(peers[0].namespace_selector.is_none(), "same namespace only");
    let ports: Vec<_> = rules[0]
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.port.clone())
        .collect();
    assert_eq!(
        ports,
        vec![Some(
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(5984)
        )],
        "never 4369 or Erlang ports"
    );

    let dp = network::dataplane_policy(&inputs).spec.unwrap();
    let rule = &dp.ingress.as_ref().unwrap()[0];
    let ns = rule.from.as_ref().unwrap()[0]
        .namespace_selector
        .as_ref()
        .unwrap();
    assert_eq!(
        ns.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
    assert_eq!(
        rule.ports.as_ref().unwrap()[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(3000))
    );
    assert_eq!(
        dp.ingress.as_ref().map(Vec::len),
        Some(1),
        "no monitoring namespace configured: the metrics port stays closed"
    );
}

/// Issue 14 item 4: a configured monitoring namespace may scrape the data plane's metrics
/// port (and only that port); `*` opens it to every namespace.
#[test]
fn the_monitoring_namespace_may_scrape_the_metrics_port() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut cfg = config();
    cfg.tenant_metrics_namespace = "monitoring".into();
    let inst = instance();
    let rules = network::dataplane_policy(&Inputs::new(&inst, &cfg))
        .spec
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(rules.len(), 2);
    let scrape = &rules[1];
    let ns = scrape.from.as_ref().unwrap()[0]
        .namespace_selector
        .as_ref()
        .unwrap();
    assert_eq!(
        ns.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let ports: Vec<_> = scrape
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.port.clone())
        .collect();
    assert_eq!(ports, vec![Some(IntOrString::Int(9464))]);
    // The container port the rule opens is the one the data plane serves metrics on.
    let deployment = dataplane::deployment(&Inputs::new(&inst, &cfg));
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(
        container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some("metrics") && p.container_port == 9464)
    );

    cfg.tenant_metrics_namespace = "*".into();
    let rules = network::dataplane_policy(&Inputs::new(&inst, &cfg))
        .spec
        .unwrap()
        .ingress
        .unwrap();
    let any = rules[1].from.as_ref().unwrap()[0]
        .namespace_selector
        .as_ref()
        .unwrap();
    assert!(
        any.match_labels.is_none() && any.match_expressions.is_none(),
        "every namespace"
    );
}

#[test]
fn children_in_apply_order_and_claim_secret_only_while_unowned() {
    let cfg = config();
    let mut inst = instance();
    let names: Vec<String> = children(&Inputs::new(&inst, &cfg), &ExistingSecrets::default())
        .iter()
        .map(Child::describe)
        .collect();
    assert_eq!(names.len(), 12);
    assert_eq!(names[0], "Secret/alice-couchdb-auth");
    assert!(names.contains(&"Secret/alice-claim".to_string()));
    let sts = names
        .iter()
        .position(|n| n == "StatefulSet/alice-couchdb")
        .unwrap();
    let cm = names
        .iter()
        .position(|n| n == "ConfigMap/alice-couchdb-config")
        .unwrap();
    assert!(cm < sts, "config before the workload mounting it");
    inst.spec.owner = Some(OwnerSpec { did: DID.into() });
    let names: Vec<String> = children(&Inputs::new(&inst, &cfg), &ExistingSecrets::default())
        .iter()
        .map(Child::describe)
        .collect();
    assert!(!names.contains(&"Secret/alice-claim".to_string()));
}

#[test]
fn quantities_convert_to_bytes() {
    assert_eq!(dataplane::quantity_bytes("1Ki"), Some(1024));
    assert_eq!(dataplane::quantity_bytes("5G"), Some(5_000_000_000));
    assert_eq!(dataplane::quantity_bytes("100"), Some(100));
    assert_eq!(dataplane::quantity_bytes("1.5Gi"), None);
    assert_eq!(dataplane::quantity_bytes("Gi"), None);
}

fn backed_up(inst: &mut VibeInstance) {
    inst.spec.owner = Some(OwnerSpec { did: DID.into() });
    inst.spec.backup = Some(crate::crd::BackupSpec {
        schedule: "30 2 * * *".into(),
        retention: 5,
        bucket: None,
        prefix: None,
        suspend: false,
    });
}

fn backup_config() -> OperatorConfig {
    OperatorConfig {
        backup_bucket: Some("vibe-backups".into()),
        backup_prefix: "cluster-a/".into(),
        ..config()
    }
}

#[test]
fn the_backup_cron_job_runs_the_data_plane_image_with_the_destination_and_no_server_secrets() {
    let cfg = backup_config();
    let mut inst = instance();
    backed_up(&mut inst);
    let inputs = Inputs::new(&inst, &cfg);
    let cj = backup::cron_job(&inputs).expect("a CronJob");
    assert_eq!(cj.metadata.name.as_deref(), Some("alice-backup"));
    assert_eq!(
        cj.metadata.owner_references.as_ref().unwrap()[0].uid,
        "uid-alice",
        "deleted with the instance"
    );
    assert_eq!(cj.spec.schedule, "30 2 * * *");
    assert_eq!(cj.spec.time_zone.as_deref(), Some("Etc/UTC"));
    assert_eq!(cj.spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(cj.spec.suspend, Some(false));
    let job = cj.spec.job_template.spec.as_ref().unwrap();
    let pod_spec = job.template.spec.as_ref().unwrap();
    assert_restricted(pod_spec);
    assert_eq!(pod_spec.restart_policy.as_deref(), Some("Never"));
    let c = pod(pod_spec);
    assert_eq!(c.image.as_deref(), Some(cfg.dataplane_image.as_str()));
    assert_eq!(c.args.as_deref(), Some(&["backup".to_string()][..]));
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some(backup::REPORT_PATH)
    );
    let vars = c.env.as_deref().unwrap();
    let value = |n: &str| env(vars, n).and_then(|e| e.value.clone());
    assert_eq!(
        value(envs::VIBE_BACKUP_BUCKET).as_deref(),
        Some("vibe-backups")
    );
    assert_eq!(
        value(envs::VIBE_BACKUP_PREFIX).as_deref(),
        Some("cluster-a/tenants/alice/")
    );
    assert_eq!(value(envs::VIBE_BACKUP_RETENTION).as_deref(), Some("5"));
    assert_eq!(
        value(envs::VIBE_BACKUP_REPORT_FILE).as_deref(),
        Some(backup::REPORT_PATH)
    );
    assert_eq!(value(envs::TARGET_USER_DID).as_deref(), Some(DID));
    for needed in [
        envs::COUCHDB_URL,
        envs::COUCHDB_PASSWORD,
        envs::S3_SECRET_KEY,
    ] {
        assert!(env(vars, needed).is_some(), "{needed}");
    }
    for not_needed in [
        envs::VIBE_SIGNING_KEY_FILE,
        envs::VIBE_CLAIM_CODE,
        envs::VIBE_RESTORE_BUCKET,
        envs::VIBE_RESTORE_OBJECT_KEY,
        envs::PORT,
    ] {
        assert!(env(vars, not_needed).is_none(), "{not_needed}");
    }
    for secret in vars.iter().filter(|v| envs::is_secret(&v.name)) {
        assert!(
            secret.value.is_none(),
            "{} only by secretKeyRef",
            secret.name
        );
    }
    assert!(pod_spec.volumes.is_none(), "the token key is not mounted");
    let labels = job
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "backup");

    // The backup pods may reach CouchDB.
    let np = network::couchdb_policy(&inputs).spec.unwrap();
    let components: Vec<String> = np.ingress.unwrap()[0]
        .from
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| {
            p.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app.kubernetes.io/component"]
                .clone()
        })
        .collect();
    assert_eq!(components, ["dataplane", "backup"]);
    assert!(
        children(&inputs, &ExistingSecrets::default())
            .iter()
            .any(|c| matches!(c, Child::CronJob(_)))
    );
}

#[test]
fn the_backup_destination_and_schedule_follow_the_spec() {
    let cfg = backup_config();
    let mut inst = instance();
    backed_up(&mut inst);
    {
        let spec = inst.spec.backup.as_mut().unwrap();
        spec.bucket = Some("own-backups".into());
        spec.prefix = Some("alice/".into());
        spec.suspend = true;
    }
    let inputs = Inputs::new(&inst, &cfg);
    assert_eq!(
        backup::destination(&inputs),
        Some(("own-backups".into(), "alice/".into()))
    );
    assert_eq!(backup::cron_job(&inputs).unwrap().spec.suspend, Some(true));

    // A suspended instance is not backed up either.
    inst.spec.backup.as_mut().unwrap().suspend = false;
    inst.spec.suspend = true;
    let inputs = Inputs::new(&inst, &cfg);
    assert_eq!(backup::cron_job(&inputs).unwrap().spec.suspend, Some(true));

    // No owner: nothing could read a backup, so there is no schedule.
    let mut unowned = instance();
    backed_up(&mut unowned);
    unowned.spec.owner = None;
    assert!(backup::cron_job(&Inputs::new(&unowned, &cfg)).is_none());
    // No bucket anywhere: no schedule (the webhook refuses such an instance).
    let mut inst = instance();
    backed_up(&mut inst);
    assert!(backup::cron_job(&Inputs::new(&inst, &config())).is_none());
    // Without spec.backup: no CronJob, and CouchDB admits the data plane only.
    let inst = instance();
    let inputs = Inputs::new(&inst, &cfg);
    assert!(backup::cron_job(&inputs).is_none());
    let np = network::couchdb_policy(&inputs).spec.unwrap();
    assert_eq!(np.ingress.unwrap()[0].from.as_ref().unwrap().len(), 1);
}

#[test]
fn a_restored_instance_points_its_data_plane_at_the_backup() {
    let cfg = backup_config();
    let mut inst = instance();
    inst.spec.owner = Some(OwnerSpec { did: DID.into() });
    inst.spec.restore_from = Some(crate::crd::RestoreFromSpec {
        instance: Some("old-alice".into()),
        backup: Some("20261204T023000.123Z-1a2b3c4d".into()),
        ..Default::default()
    });
    let inputs = Inputs::new(&inst, &cfg);
    let expected_key = "cluster-a/tenants/old-alice/20261204T023000.123Z-1a2b3c4d.vibe.age";
    assert_eq!(
        backup::restore_source(&inputs),
        Some(("vibe-backups".into(), expected_key.into()))
    );
    let vars = dataplane::env_vars(&inputs);
    let value = |n: &str| env(&vars, n).and_then(|e| e.value.clone());
    assert_eq!(
        value(envs::VIBE_RESTORE_BUCKET).as_deref(),
        Some("vibe-backups")
    );
    assert_eq!(
        value(envs::VIBE_RESTORE_OBJECT_KEY).as_deref(),
        Some(expected_key)
    );

    inst.spec.restore_from = Some(crate::crd::RestoreFromSpec {
        object_key: Some("elsewhere/x.vibe.age".into()),
        bucket: Some("old-provider".into()),
        ..Default::default()
    });
    let inputs = Inputs::new(&inst, &cfg);
    assert_eq!(
        backup::restore_source(&inputs),
        Some(("old-provider".into(), "elsewhere/x.vibe.age".into()))
    );
    // Not restoring: no restore settings.
    let plain = instance();
    let vars = dataplane::env_vars(&Inputs::new(&plain, &cfg));
    assert!(env(&vars, envs::VIBE_RESTORE_BUCKET).is_none());
}
