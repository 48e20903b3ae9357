//! Swarm mode's engine calls: the node milkcrate talks to, overlay networks, services (from a
//! [`ServicePlan`], copied field by field into the engine's types), tasks, nodes, the
//! addresses the router reaches tasks at, and pushing images to a registry.

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, HealthConfig, Limit, Mount, MountTmpfsOptions, MountType, MountVolumeOptions,
    NetworkAttachmentConfig, NetworkConnectRequest, NetworkCreateRequest, ResourceObject,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecPrivileges, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::{
    InspectNetworkOptions, ListNodesOptions, ListServicesOptions, ListTasksOptions,
    UpdateServiceOptions,
};
use futures_util::StreamExt;

use super::{Engine, EngineError};
use crate::domain::service_spec::{RolloutPlan, ServicePlan};

/// The swarm as the node milkcrate talks to sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmNode {
    pub node_id: String,
    /// `active`, `inactive`, `pending`, `error`, `locked`.
    pub state: String,
    /// Whether this node is a manager (services can be created through it).
    pub manager: bool,
    pub nodes: i64,
}

/// One service, as one list call reports it.
#[derive(Debug, Clone, Default)]
pub struct ServiceFacts {
    pub id: String,
    pub name: String,
    pub app: Option<String>,
    pub image: String,
    pub replicas: u64,
    pub running: u64,
    pub desired: u64,
    /// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused`,
    /// `rollback_completed`, or empty when never updated.
    pub update_state: String,
    pub update_message: String,
    /// The spec's version, for updates.
    pub version: u64,
    /// The app's overlay network.
    pub network: Option<String>,
    /// The placement constraints of its tasks.
    pub constraints: Vec<String>,
}

/// One task, as one list call reports it.
#[derive(Debug, Clone, Default)]
pub struct TaskFacts {
    pub id: String,
    pub service_id: String,
    pub slot: i64,
    pub node_id: String,
    /// `new` … `running`, `complete`, `shutdown`, `failed`, `rejected`, `orphaned`.
    pub state: String,
    pub desired_state: String,
    pub message: String,
    pub error: String,
    pub container_id: Option<String>,
    pub image: String,
}

/// One node of the swarm.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub id: String,
    pub hostname: String,
    pub role: String,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    pub addr: String,
    pub leader: bool,
    pub cpus: f64,
    pub memory_bytes: i64,
    pub engine_version: String,
    pub labels: Vec<(String, String)>,
    /// `linux`…, `x86_64`… (what `node.platform.os` and `.arch` match).
    pub os: String,
    pub arch: String,
}

fn rollout_update(r: &RolloutPlan) -> ServiceSpecUpdateConfig {
    ServiceSpecUpdateConfig {
        parallelism: Some(r.parallelism),
        delay: Some(0),
        failure_action: Some(if r.rollback_on_failure {
            ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK
        } else {
            ServiceSpecUpdateConfigFailureActionEnum::PAUSE
        }),
        monitor: Some(r.monitor_ns),
        max_failure_ratio: Some(0.0),
        order: Some(if r.start_first {
            ServiceSpecUpdateConfigOrderEnum::START_FIRST
        } else {
            ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
        }),
    }
}

fn rollout_rollback(r: &RolloutPlan) -> ServiceSpecRollbackConfig {
    ServiceSpecRollbackConfig {
        parallelism: Some(r.parallelism),
        delay: Some(0),
        failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
        monitor: Some(r.monitor_ns),
        max_failure_ratio: Some(0.0),
        order: Some(if r.start_first {
            ServiceSpecRollbackConfigOrderEnum::START_FIRST
        } else {
            ServiceSpecRollbackConfigOrderEnum::STOP_FIRST
        }),
    }
}

/// The engine's spec for `plan`: a copy, field by field, deciding nothing.
fn spec_of(plan: &ServicePlan) -> ServiceSpec {
    let labels: HashMap<String, String> = plan
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut mounts: Vec<Mount> = plan
        .tmpfs
        .iter()
        .map(|t| Mount {
            target: Some(t.target.clone()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(t.size_bytes),
                mode: Some(t.mode),
                options: None,
            }),
            ..Default::default()
        })
        .collect();
    mounts.extend(plan.volumes.iter().map(|v| Mount {
        target: Some(v.target.clone()),
        source: Some(v.volume.clone()),
        typ: Some(MountType::VOLUME),
        read_only: Some(v.read_only),
        // Never created empty on a node that lacks it: the placement pins the app instead.
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let container = TaskSpecContainerSpec {
        image: Some(plan.image.clone()),
        labels: Some(labels.clone()),
        command: plan.entrypoint.clone(),
        args: plan.command.clone(),
        env: Some(plan.env.clone()),
        dir: plan.working_dir.clone(),
        user: Some(plan.user.clone()),
        privileges: Some(TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(plan.no_new_privileges),
            ..Default::default()
        }),
        read_only: Some(plan.read_only),
        mounts: Some(mounts),
        stop_signal: plan.stop_signal.clone(),
        stop_grace_period: plan.stop_grace_ns,
        health_check: plan.health.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval_ns,
            timeout: h.timeout_ns,
            start_period: h.start_period_ns,
            retries: h.retries,
            ..Default::default()
        }),
        init: Some(plan.init),
        capability_add: Some(plan.cap_add.clone()),
        capability_drop: Some(plan.cap_drop.clone()),
        ..Default::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: Some(plan.limits.nano_cpus),
                memory_bytes: Some(plan.limits.memory_bytes),
                pids: plan.limits.pids,
            }),
            reservations: Some(ResourceObject {
                nano_cpus: Some(plan.reservations.nano_cpus),
                memory_bytes: Some(plan.reservations.memory_bytes),
                generic_resources: None,
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(match plan.restart_condition {
                "none" => TaskSpecRestartPolicyConditionEnum::NONE,
                "on-failure" => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
                _ => TaskSpecRestartPolicyConditionEnum::ANY,
            }),
            delay: Some(plan.restart_delay_ns),
            max_attempts: Some(0),
            window: Some(0),
        }),
        placement: Some(TaskSpecPlacement {
            constraints: Some(plan.constraints.clone()),
            ..Default::default()
        }),
        // The routed network first: the status reads a service's first network as the one
        // the router reaches its tasks on.
        networks: Some(
            plan.also_on
                .iter()
                .map(|n| NetworkAttachmentConfig {
                    target: Some(n.clone()),
                    aliases: None,
                    driver_opts: None,
                })
                .chain([NetworkAttachmentConfig {
                    target: Some(plan.network.clone()),
                    aliases: (!plan.aliases.is_empty()).then(|| plan.aliases.clone()),
                    driver_opts: None,
                }])
                .collect(),
        ),
        log_driver: Some(TaskSpecLogDriver {
            name: Some(plan.log_driver.clone()),
            options: Some(
                plan.log_options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(plan.name.clone()),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(plan.replicas as i64),
            }),
            ..Default::default()
        }),
        update_config: Some(rollout_update(&plan.update)),
        rollback_config: Some(rollout_rollback(&plan.rollback)),
        // No published port: apps are reached through milkcrate's router only.
        endpoint_spec: Some(EndpointSpec {
            mode: plan
                .dns_round_robin
                .then_some(bollard::models::EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn enum_text<T: serde::Serialize>(value: &Option<T>) -> String {
    value
        .as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn service_facts(s: bollard::models::Service) -> ServiceFacts {
    let spec = s.spec.unwrap_or_default();
    let labels = spec.labels.clone().unwrap_or_default();
    let task = spec.task_template.clone().unwrap_or_default();
    let status = s.service_status.unwrap_or_default();
    let update = s.update_status.unwrap_or_default();
    ServiceFacts {
        id: s.id.unwrap_or_default(),
        name: spec.name.clone().unwrap_or_default(),
        app: labels.get(crate::domain::labels::APP).cloned(),
        image: task
            .container_spec
            .and_then(|c| c.image)
            .unwrap_or_default(),
        replicas: spec
            .mode
            .and_then(|m| m.replicated)
            .and_then(|r| r.replicas)
            .unwrap_or(0)
            .max(0) as u64,
        running: status.running_tasks.unwrap_or(0),
        desired: status.desired_tasks.unwrap_or(0),
        update_state: enum_text(&update.state),
        update_message: update.message.unwrap_or_default(),
        version: s.version.and_then(|v| v.index).unwrap_or(0),
        constraints: task
            .placement
            .clone()
            .and_then(|p| p.constraints)
            .unwrap_or_default(),
        network: task
            .networks
            .and_then(|n| n.into_iter().next())
            .and_then(|n| n.target),
    }
}

impl Engine {
    /// The swarm state of the node milkcrate talks to.
    pub async fn swarm_node(&self) -> Result<SwarmNode, EngineError> {
        let info = self.docker.info().await?;
        let swarm = info.swarm.unwrap_or_default();
        Ok(SwarmNode {
            node_id: swarm.node_id.unwrap_or_default(),
            state: enum_text(&swarm.local_node_state),
            manager: swarm.control_available.unwrap_or(false),
            nodes: swarm.nodes.unwrap_or(0),
        })
    }

    /// Creates the attachable overlay network `name` when it does not exist. `internal`: no
    /// way out of it (and no gateway address on the nodes).
    pub async fn ensure_overlay(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        internal: bool,
    ) -> Result<(), EngineError> {
        if self.network_exists(name).await {
            return Ok(());
        }
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            internal: Some(internal),
            labels: Some(labels),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("already exists") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the service `plan` describes; returns its id.
    pub async fn create_service(&self, plan: &ServicePlan) -> Result<String, EngineError> {
        let created = self.docker.create_service(spec_of(plan), None).await?;
        Ok(created.id.unwrap_or_default())
    }

    /// One service by name or id; `None` when there is none.
    pub async fn service(&self, name: &str) -> Result<Option<ServiceFacts>, EngineError> {
        match self
            .docker
            .inspect_service(
                name,
                None::<bollard::query_parameters::InspectServiceOptions>,
            )
            .await
        {
            Ok(s) => Ok(Some(service_facts(s))),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Replaces the spec of service `name` with `plan` (a rolling update, as the plan's update
    /// config says).
    pub async fn update_service(&self, name: &str, plan: &ServicePlan) -> Result<(), EngineError> {
        let current = self
            .service(name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("service {name}")))?;
        self.docker
            .update_service(
                name,
                spec_of(plan),
                UpdateServiceOptions {
                    version: i32::try_from(current.version).unwrap_or(i32::MAX),
                    ..Default::default()
                },
                None,
            )
            .await?;
        Ok(())
    }

    /// Reads service `name`'s spec, lets `change` edit it, and writes it back at the version
    /// read (with `rollback`, asks Swarm for the previous spec instead).
    async fn respec(
        &self,
        name: &str,
        rollback: bool,
        change: impl FnOnce(&mut ServiceSpec),
    ) -> Result<(), EngineError> {
        let s = self
            .docker
            .inspect_service(
                name,
                None::<bollard::query_parameters::InspectServiceOptions>,
            )
            .await?;
        let version = s.version.and_then(|v| v.index).unwrap_or(0);
        let mut spec = s.spec.unwrap_or_default();
        change(&mut spec);
        self.docker
            .update_service(
                name,
                spec,
                UpdateServiceOptions {
                    version: i32::try_from(version).unwrap_or(i32::MAX),
                    rollback: rollback.then(|| "previous".into()),
                    ..Default::default()
                },
                None,
            )
            .await?;
        Ok(())
    }

    /// Sets the number of tasks of service `name`, keeping the rest of its spec.
    pub async fn scale_service(&self, name: &str, replicas: u64) -> Result<(), EngineError> {
        self.respec(name, false, |spec| {
            spec.mode = Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::try_from(replicas).unwrap_or(i64::MAX)),
                }),
                ..Default::default()
            });
        })
        .await
    }

    /// Sets the placement constraints of service `name`, keeping the rest of its spec (its
    /// tasks are replaced as an update replaces them).
    pub async fn set_service_constraints(
        &self,
        name: &str,
        constraints: &[String],
    ) -> Result<(), EngineError> {
        self.respec(name, false, |spec| {
            let task = spec.task_template.get_or_insert_with(Default::default);
            task.placement
                .get_or_insert_with(Default::default)
                .constraints = Some(constraints.to_vec());
        })
        .await
    }

    /// Puts service `name` back to its previous spec (`docker service rollback`).
    pub async fn rollback_service(&self, name: &str) -> Result<(), EngineError> {
        self.respec(name, true, |_| {}).await
    }

    /// Replaces every task of service `name` with a new one of the same spec (a restart),
    /// rolling as an update does.
    pub async fn restart_service(&self, name: &str) -> Result<(), EngineError> {
        self.respec(name, false, |spec| {
            if let Some(task) = spec.task_template.as_mut() {
                task.force_update = Some(task.force_update.unwrap_or(0).wrapping_add(1));
            }
        })
        .await
    }

    /// One item per container event among `events` of containers carrying all `labels`,
    /// from now on; ends when the engine goes away.
    pub fn container_events(
        &self,
        labels: &[String],
        events: &[&str],
    ) -> impl futures_util::Stream<Item = Result<(), EngineError>> + Send + 'static {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                events.iter().map(|e| e.to_string()).collect(),
            ),
            ("label".to_string(), labels.to_vec()),
        ]);
        self.events_matching(filters)
    }

    /// One item per engine event that `filters` match, from now on.
    fn events_matching(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> impl futures_util::Stream<Item = Result<(), EngineError>> + Send + 'static {
        self.docker
            .events(Some(bollard::query_parameters::EventsOptions {
                since: None,
                until: None,
                filters: Some(filters),
            }))
            .map(|r| r.map(|_| ()).map_err(EngineError::from))
    }

    /// One item per node event of the swarm (a node going down or coming back, its
    /// availability or labels changed), from now on; a manager reports them for every node.
    pub fn node_events(
        &self,
    ) -> impl futures_util::Stream<Item = Result<(), EngineError>> + Send + 'static {
        let filters = HashMap::from([("type".to_string(), vec!["node".to_string()])]);
        self.events_matching(filters)
    }

    /// Removes a service (its tasks' containers go with it); one already gone counts.
    pub async fn remove_service(&self, name: &str) -> Result<(), EngineError> {
        match self.docker.delete_service(name).await {
            Ok(()) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Every service carrying all `labels`, with its running and desired task counts, in ONE
    /// list call.
    pub async fn services_labelled(
        &self,
        labels: &[String],
    ) -> Result<Vec<ServiceFacts>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let list = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters),
                status: Some(true),
            }))
            .await?;
        Ok(list.into_iter().map(service_facts).collect())
    }

    /// Every task of the services named in `services`, in ONE list call.
    pub async fn tasks_of(&self, services: &[String]) -> Result<Vec<TaskFacts>, EngineError> {
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let filters = HashMap::from([("service".to_string(), services.to_vec())]);
        let list = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await?;
        Ok(list
            .into_iter()
            .map(|t| {
                let status = t.status.unwrap_or_default();
                TaskFacts {
                    id: t.id.unwrap_or_default(),
                    service_id: t.service_id.unwrap_or_default(),
                    slot: t.slot.unwrap_or(0),
                    node_id: t.node_id.unwrap_or_default(),
                    state: enum_text(&status.state),
                    desired_state: enum_text(&t.desired_state),
                    message: status.message.unwrap_or_default(),
                    error: status.err.unwrap_or_default(),
                    container_id: status
                        .container_status
                        .and_then(|c| c.container_id)
                        .filter(|c| !c.is_empty()),
                    image: t
                        .spec
                        .and_then(|s| s.container_spec)
                        .and_then(|c| c.image)
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Every node of the swarm.
    pub async fn nodes(&self) -> Result<Vec<NodeFacts>, EngineError> {
        let list = self.docker.list_nodes(None::<ListNodesOptions>).await?;
        Ok(list
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let desc = n.description.unwrap_or_default();
                let status = n.status.unwrap_or_default();
                let resources = desc.resources.unwrap_or_default();
                let mut labels: Vec<(String, String)> = spec
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                labels.sort();
                NodeFacts {
                    id: n.id.unwrap_or_default(),
                    hostname: desc.hostname.unwrap_or_default(),
                    role: enum_text(&spec.role),
                    state: enum_text(&status.state),
                    availability: enum_text(&spec.availability),
                    addr: status.addr.unwrap_or_default(),
                    leader: n.manager_status.and_then(|m| m.leader).unwrap_or(false),
                    cpus: resources.nano_cpus.unwrap_or(0) as f64 / 1e9,
                    memory_bytes: resources.memory_bytes.unwrap_or(0),
                    os: desc
                        .platform
                        .as_ref()
                        .and_then(|p| p.os.clone())
                        .unwrap_or_default(),
                    arch: desc
                        .platform
                        .as_ref()
                        .and_then(|p| p.architecture.clone())
                        .unwrap_or_default(),
                    engine_version: desc
                        .engine
                        .and_then(|e| e.engine_version)
                        .unwrap_or_default(),
                    labels,
                }
            })
            .collect())
    }

    /// Container id → address on `docker_gwbridge`, for the task containers of THIS node: the
    /// one address of a task on a non-internal overlay that a process on the host can reach.
    /// One call.
    pub async fn gateway_addresses(&self) -> Result<HashMap<String, String>, EngineError> {
        let net = match self
            .docker
            .inspect_network("docker_gwbridge", None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                return match EngineError::from(e) {
                    // No task has run on this node yet.
                    EngineError::NotFound(_) => Ok(HashMap::new()),
                    other => Err(other),
                };
            }
        };
        Ok(net
            .containers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(id, c)| {
                let ip = c.ipv4_address?.split('/').next()?.to_string();
                (!ip.is_empty()).then_some((id, ip))
            })
            .collect())
    }

    /// Task name prefix (`<service>.<slot>.<task id>`) → its address on overlay `network`, on
    /// every node (the network's swarm-wide view). One call per network.
    pub async fn overlay_addresses(
        &self,
        network: &str,
    ) -> Result<HashMap<String, String>, EngineError> {
        let net = self
            .docker
            .inspect_network(
                network,
                Some(InspectNetworkOptions {
                    verbose: true,
                    scope: Some("swarm".into()),
                }),
            )
            .await?;
        let mut out = HashMap::new();
        for service in net.services.unwrap_or_default().into_values() {
            let tasks = service
                .get("Tasks")
                .and_then(|t| t.as_array())
                .cloned()
                .unwrap_or_default();
            for t in tasks {
                if let (Some(name), Some(ip)) = (
                    t.get("Name").and_then(|n| n.as_str()),
                    t.get("EndpointIP").and_then(|n| n.as_str()),
                ) && let Some(task_id) = name.rsplit('.').next()
                {
                    out.insert(task_id.to_string(), ip.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Joins container `container` (milkcrate's own) to `network`; already joined is fine.
    pub async fn join_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        match self
            .docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: container.to_string(),
                    endpoint_config: None,
                },
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("already exists") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Tags `image` as `target` (`registry/repo:tag`), pushes it, and returns the reference
    /// by digest (`registry/repo@sha256:…`) the nodes pull.
    pub async fn push_image(&self, image: &str, target: &str) -> Result<String, EngineError> {
        let (repo, tag) = target
            .rsplit_once(':')
            .filter(|(r, _)| !r.ends_with(']') && r.contains('/'))
            .ok_or_else(|| EngineError::Refused(format!("{target} is not repo:tag")))?;
        self.docker
            .tag_image(
                image,
                Some(bollard::query_parameters::TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await?;
        let mut stream = self.docker.push_image(
            repo,
            Some(bollard::query_parameters::PushImageOptions {
                tag: Some(tag.to_string()),
                platform: None,
            }),
            None,
        );
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = item?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Api(format!("pushing {target}: {e}")));
            }
            if let Some(d) = info
                .status
                .as_deref()
                .and_then(|s| s.split("digest: ").nth(1))
                .and_then(|s| s.split_whitespace().next())
            {
                digest = Some(d.to_string());
            }
        }
        let digest = digest.ok_or_else(|| {
            EngineError::Api(format!("the registry reported no digest for {target}"))
        })?;
        Ok(format!("{repo}@{digest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::hardening::{ContainerSpec, Limits, Process};
    use crate::domain::service_spec::{SwarmOptions, service_plan};

    #[test]
    fn the_engine_spec_is_a_copy_of_the_plan() {
        let spec = ContainerSpec::new(
            "svc",
            "img:1",
            "net",
            Limits {
                memory_mb: 128,
                cpu_percent: 20,
            },
        );
        let s = spec_of(&service_plan(&spec, &SwarmOptions::default()));
        let json = serde_json::to_value(&s).unwrap();
        let task = &json["TaskTemplate"];
        assert_eq!(task["Resources"]["Limits"]["Pids"], 100);
        assert_eq!(
            task["Resources"]["Limits"]["MemoryBytes"],
            128 * 1024 * 1024
        );
        assert_eq!(task["Resources"]["Limits"]["NanoCPUs"], 200_000_000);
        assert_eq!(task["ContainerSpec"]["CapabilityDrop"][0], "ALL");
        assert_eq!(
            task["ContainerSpec"]["CapabilityAdd"][0],
            "CAP_NET_BIND_SERVICE"
        );
        assert_eq!(task["ContainerSpec"]["User"], "65534:65534");
        assert_eq!(task["ContainerSpec"]["Mounts"][0]["Type"], "tmpfs");
        assert_eq!(task["RestartPolicy"]["Condition"], "any");
        assert_eq!(task["LogDriver"]["Options"]["max-size"], "10m");
        assert_eq!(json["UpdateConfig"]["Order"], "start-first");
        assert_eq!(json["UpdateConfig"]["FailureAction"], "rollback");
        assert_eq!(json["UpdateConfig"]["Parallelism"], 1);
        assert_eq!(json["Mode"]["Replicated"]["Replicas"], 1);
        assert!(
            json["EndpointSpec"].get("Ports").is_none(),
            "no published port"
        );
        assert!(json["EndpointSpec"].get("Mode").is_none(), "a virtual IP");
        assert_eq!(task["Networks"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_stack_service_joins_the_routed_network_first_and_resolves_by_dns() {
        let spec = ContainerSpec::new(
            "milkcrate-shop-web-7",
            "milkcrate-shop-web:1-7",
            "milkcrate-shop_stack",
            Limits {
                memory_mb: 128,
                cpu_percent: 20,
            },
        )
        .process(Process {
            aliases: vec!["web".into()],
            also_on: Some("milkcrate-shop-swarm".into()),
            ..Default::default()
        });
        let mut plan = service_plan(&spec, &SwarmOptions::default());
        plan.dns_round_robin = true;
        let json = serde_json::to_value(spec_of(&plan)).unwrap();
        let nets = &json["TaskTemplate"]["Networks"];
        assert_eq!(nets[0]["Target"], "milkcrate-shop-swarm");
        assert!(nets[0].get("Aliases").is_none());
        assert_eq!(nets[1]["Target"], "milkcrate-shop_stack");
        assert_eq!(nets[1]["Aliases"][0], "web");
        assert_eq!(json["EndpointSpec"]["Mode"], "dnsrr");
    }
}
