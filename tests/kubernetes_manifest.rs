//! deploy/kubernetes/weave-rs.yaml cannot be applied here (no Kubernetes on
//! the development machines), so this checks what a user relies on: every
//! document parses, the objects refer to each other by the right names, and
//! the DaemonSet runs setup-cni and the router the way README.md says.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every non-empty document of the manifest.
fn documents() -> Vec<Value> {
    let path = deploy_dir().join("weave-rs.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("document {i} does not parse: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The value at `path` (mapping keys), or a panic naming the path.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("missing {}", path[..=i].join(".")));
    }
    cur
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

fn seq_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{} is not a list", path.join(".")))
}

fn strings(v: &[Value]) -> Vec<&str> {
    v.iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{s:?} is not a string"))
        })
        .collect()
}

/// The one document of `kind`.
fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn pod_spec(docs: &[Value]) -> &Value {
    at(one(docs, "DaemonSet"), &["spec", "template", "spec"])
}

/// A container's command and args, joined by spaces.
fn command_line(c: &Value) -> String {
    let mut words = Vec::new();
    for key in ["command", "args"] {
        if let Some(list) = c.get(key) {
            words.extend(strings(list.as_sequence().expect("a list of words")));
        }
    }
    words.join(" ")
}

/// The value of environment variable `name` of container `c` (the whole
/// entry: `value` or `valueFrom`).
fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    seq_at(c, &["env"])
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// The hostPath of the volume mounted at `mount_path` in container `c`.
fn host_path_at<'a>(pod: &'a Value, c: &'a Value, mount_path: &str) -> (&'a Value, &'a Value) {
    let mount = seq_at(c, &["volumeMounts"])
        .iter()
        .find(|m| m.get("mountPath").and_then(Value::as_str) == Some(mount_path))
        .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
    let name = str_at(mount, &["name"]);
    let volume = seq_at(pod, &["volumes"])
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no volume {name}"));
    (mount, at(volume, &["hostPath"]))
}

#[test]
fn the_four_objects_are_there() {
    let docs = documents();
    let kinds: Vec<&str> = docs.iter().map(|d| str_at(d, &["kind"])).collect();
    let set: BTreeSet<&str> = kinds.iter().copied().collect();
    assert_eq!(
        set,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "ServiceAccount"
        ]),
        "kinds: {kinds:?}"
    );
    assert_eq!(kinds.len(), 4, "kinds: {kinds:?}");
    for kind in ["ServiceAccount", "DaemonSet"] {
        assert_eq!(
            str_at(one(&docs, kind), &["metadata", "namespace"]),
            "kube-system"
        );
    }
}

#[test]
fn the_cluster_role_only_reads_nodes() {
    let docs = documents();
    let rules = seq_at(one(&docs, "ClusterRole"), &["rules"]);
    assert_eq!(rules.len(), 1, "one rule: {rules:?}");
    let rule = &rules[0];
    assert_eq!(strings(seq_at(rule, &["apiGroups"])), [""]);
    assert_eq!(strings(seq_at(rule, &["resources"])), ["nodes"]);
    let verbs: BTreeSet<&str> = strings(seq_at(rule, &["verbs"])).into_iter().collect();
    assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]));
    let keys: BTreeSet<&str> = rule
        .as_mapping()
        .expect("a rule is a mapping")
        .keys()
        .map(|k| k.as_str().expect("string keys"))
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["apiGroups", "resources", "verbs"]),
        "no resourceNames or nonResourceURLs"
    );
}

#[test]
fn the_binding_names_the_role_and_account_defined() {
    let docs = documents();
    let account = one(&docs, "ServiceAccount");
    let role = one(&docs, "ClusterRole");
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(str_at(binding, &["roleRef", "kind"]), "ClusterRole");
    assert_eq!(
        str_at(binding, &["roleRef", "apiGroup"]),
        "rbac.authorization.k8s.io"
    );
    assert_eq!(
        str_at(binding, &["roleRef", "name"]),
        str_at(role, &["metadata", "name"])
    );
    let subjects = seq_at(binding, &["subjects"]);
    assert_eq!(subjects.len(), 1);
    assert_eq!(str_at(&subjects[0], &["kind"]), "ServiceAccount");
    assert_eq!(
        str_at(&subjects[0], &["name"]),
        str_at(account, &["metadata", "name"])
    );
    assert_eq!(
        str_at(&subjects[0], &["namespace"]),
        str_at(account, &["metadata", "namespace"])
    );
    // And the pods run as that account.
    assert_eq!(
        str_at(pod_spec(&docs), &["serviceAccountName"]),
        str_at(account, &["metadata", "name"])
    );
}

#[test]
fn the_daemon_set_runs_everywhere_on_the_host_network() {
    let docs = documents();
    let ds = one(&docs, "DaemonSet");
    let pod = pod_spec(&docs);
    assert_eq!(at(pod, &["hostNetwork"]).as_bool(), Some(true));
    assert_ne!(pod.get("hostPID").and_then(Value::as_bool), Some(true));
    assert_eq!(str_at(pod, &["priorityClassName"]), "system-node-critical");
    assert_eq!(
        str_at(ds, &["spec", "updateStrategy", "type"]),
        "RollingUpdate"
    );
    // The selector picks the template's pods.
    let selector = at(ds, &["spec", "selector", "matchLabels"])
        .as_mapping()
        .expect("matchLabels is a mapping");
    let labels = at(ds, &["spec", "template", "metadata", "labels"]);
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(labels.get(k.as_str().unwrap()), Some(v), "label {k:?}");
    }
    // Every taint of either effect is tolerated (control plane included).
    let tolerations = seq_at(pod, &["tolerations"]);
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(
            tolerations.iter().any(|t| {
                t.get("operator").and_then(Value::as_str) == Some("Exists")
                    && t.get("key").is_none()
                    && t.get("effect").and_then(Value::as_str) == Some(effect)
            }),
            "no toleration of every {effect} taint: {tolerations:?}"
        );
    }
}

#[test]
fn the_router_container_launches_in_the_foreground_privileged() {
    let docs = documents();
    let pod = pod_spec(&docs);
    let containers = seq_at(pod, &["containers"]);
    let routers: Vec<&Value> = containers
        .iter()
        .filter(|c| command_line(c).contains("weave-rs launch"))
        .collect();
    assert_eq!(routers.len(), 1, "one container runs weave-rs launch");
    let c = routers[0];
    let cmd = command_line(c);
    for flag in [
        "--foreground",
        "--plugin-socket off",
        "--ipalloc-init \"consensus=",
        "--ipalloc-range \"${IPALLOC_RANGE:-10.32.0.0/12}\"",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "ca.crt",
        "/api/v1/nodes",
        "InternalIP",
        "$NODE_IP",
    ] {
        assert!(cmd.contains(flag), "launch script lacks {flag:?}:\n{cmd}");
    }
    assert!(
        cmd.contains("exec weave-rs launch"),
        "the router replaces the shell (gets SIGTERM)"
    );
    assert_eq!(
        at(c, &["securityContext", "privileged"]).as_bool(),
        Some(true)
    );
    assert_eq!(
        str_at(env(c, "NODE_IP"), &["valueFrom", "fieldRef", "fieldPath"]),
        "status.hostIP"
    );
    assert_eq!(str_at(env(c, "IPALLOC_RANGE"), &["value"]), "10.32.0.0/12");
    assert_eq!(
        strings(seq_at(c, &["readinessProbe", "exec", "command"])),
        ["weave-rs", "status"]
    );
    assert_eq!(str_at(c, &["image"]), "ghcr.io/weave-rs/weave-rs:latest");
    assert!(at(c, &["resources", "requests"]).get("cpu").is_some());
    assert!(at(c, &["resources", "requests"]).get("memory").is_some());

    let (_, state) = host_path_at(pod, c, "/var/lib/weave-rs");
    assert_eq!(str_at(state, &["path"]), "/var/lib/weave-rs");
    assert_eq!(str_at(state, &["type"]), "DirectoryOrCreate");
    let (mount, netns) = host_path_at(pod, c, "/var/run/netns");
    assert_eq!(str_at(netns, &["path"]), "/var/run/netns");
    assert_eq!(str_at(mount, &["mountPropagation"]), "Bidirectional");
    let (_, lock) = host_path_at(pod, c, "/run/xtables.lock");
    assert_eq!(str_at(lock, &["path"]), "/run/xtables.lock");
    let (mount, modules) = host_path_at(pod, c, "/lib/modules");
    assert_eq!(str_at(modules, &["path"]), "/lib/modules");
    assert_eq!(at(mount, &["readOnly"]).as_bool(), Some(true));
}

#[test]
fn the_init_container_installs_the_cni_plugin_on_the_host() {
    let docs = documents();
    let pod = pod_spec(&docs);
    let inits = seq_at(pod, &["initContainers"]);
    assert_eq!(inits.len(), 1);
    let c = &inits[0];
    assert_eq!(
        command_line(c),
        "weave-rs setup-cni --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d"
    );
    let (_, bin) = host_path_at(pod, c, "/host/opt/cni/bin");
    assert_eq!(str_at(bin, &["path"]), "/opt/cni/bin");
    let (_, conf) = host_path_at(pod, c, "/host/etc/cni/net.d");
    assert_eq!(str_at(conf, &["path"]), "/etc/cni/net.d");
    // The same image as the router: the plugin is the router's binary.
    assert_eq!(
        str_at(c, &["image"]),
        str_at(&seq_at(pod, &["containers"])[0], &["image"])
    );
}

#[test]
fn every_volume_mount_names_a_defined_volume() {
    let docs = documents();
    let pod = pod_spec(&docs);
    let volumes: Vec<&str> = seq_at(pod, &["volumes"])
        .iter()
        .map(|v| str_at(v, &["name"]))
        .collect();
    let defined: BTreeSet<&str> = volumes.iter().copied().collect();
    assert_eq!(defined.len(), volumes.len(), "duplicate volume names");
    let mut mounts = 0;
    for list in ["initContainers", "containers"] {
        for c in seq_at(pod, &[list]) {
            for m in c
                .get("volumeMounts")
                .and_then(Value::as_sequence)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let name = str_at(m, &["name"]);
                assert!(
                    defined.contains(name),
                    "{} mounts undefined volume {name}",
                    str_at(c, &["name"])
                );
                mounts += 1;
            }
        }
    }
    assert_eq!(mounts, 6, "two init mounts, four router mounts");
}

#[test]
fn the_dockerfile_builds_the_image_the_manifest_names() {
    let path = deploy_dir().join("Dockerfile");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(text.contains("FROM debian:bookworm-slim"));
    assert!(text.contains("cargo build --release"));
    assert!(text.contains("/usr/local/bin/weave-rs"));
    for package in [
        "iproute2",
        "iptables",
        "ebtables",
        "ca-certificates",
        "curl",
    ] {
        assert!(
            text.contains(package),
            "Dockerfile does not install {package}"
        );
    }
}
