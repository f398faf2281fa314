"""Train and evaluate one configuration (or a sweep with -m). See README.md.

    python run.py model=iwaer dataset=mnist
    python run.py -m model=iwae,iwaer seed=0,1,2
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmark.experiment import train_and_evaluate
from benchmark.provenance import protocol_id

OmegaConf.register_new_resolver(
    "protocol_id", lambda *, _root_: protocol_id(_root_), replace=True
)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = train_and_evaluate(cfg, run_dir)
    print(
        f"{result['dataset']} {result['model']} seed {result['seed']}: test log-likelihood "
        f"{result['test_ll']:.3f} ± {result['test_ll_se']:.3f} nats "
        f"(S={result['eval_samples']}, n={result['n_test']}) -> {run_dir / 'result.json'}"
    )
    return result["test_ll"]


if __name__ == "__main__":
    main()
