"""Train and evaluate one configuration (or a sweep with -m). See README.md.

python run.py model=iwaer dataset=mnist
python run.py -m model=iwae,iwaer seed=0,1,2
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from benchmark.config import register_resolvers
from benchmark.experiment import train_and_evaluate

register_resolvers()


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
