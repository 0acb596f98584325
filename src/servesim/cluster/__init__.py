"""Networks of engines: co-simulated engines, routes between step classes, routers over
replicas, class priorities, per-hop and per-task metrics (see docs/networks.md)."""

from servesim.cluster.engine import ClassPriority, ClusterEngine, Visit
from servesim.cluster.model import ROUTERS, EngineSpec, Network, StepClass, Workflow
from servesim.cluster.report import (
    class_table,
    engine_table,
    network_series,
    network_verdict,
    workflow_table,
)
from servesim.cluster.scenario import NetworkScenario, load_network, network_from_dict
from servesim.cluster.sim import NetworkRun, simulate_network
from servesim.cluster.study import NetworkStudy, run_network, study_network
from servesim.cluster.theory import NetworkTheory, network_theory

__all__ = [
    "ROUTERS",
    "ClassPriority",
    "ClusterEngine",
    "EngineSpec",
    "Network",
    "NetworkRun",
    "NetworkScenario",
    "NetworkStudy",
    "NetworkTheory",
    "StepClass",
    "Visit",
    "Workflow",
    "class_table",
    "engine_table",
    "load_network",
    "network_from_dict",
    "network_series",
    "network_theory",
    "network_verdict",
    "run_network",
    "simulate_network",
    "study_network",
    "workflow_table",
]
