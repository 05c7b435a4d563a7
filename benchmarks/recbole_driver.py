"""Run one RecBole model on pre-split atomic files and print one JSON line (run by
``bench_models.py`` with the RecBole environment's interpreter; imports nothing of the package).

    python recbole_driver.py '{"model": "LightGCN", "dataset": "ml-100k-s0", "data_path": ...}'

The JSON argument is merged into RecBole's config; the output line holds the best validation
and the test Recall@20 / NDCG@20, the epoch count and the seconds of ``trainer.fit`` (training
plus the per-epoch validation, as the package's side is timed).
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")   # recbole-reference.md


def main() -> None:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    extra = json.loads(sys.argv[1])
    threads = int(extra.pop("threads", 1))
    torch.set_num_threads(threads)
    model = extra.pop("model")
    cfg = Config(model=model, dataset=extra.pop("dataset"), config_dict=extra)
    init_seed(cfg["seed"], cfg["reproducibility"])
    dataset = create_dataset(cfg)
    train, valid, test = data_preparation(cfg, dataset)
    init_seed(cfg["seed"] + cfg["local_rank"], cfg["reproducibility"])
    net = get_model(cfg["model"])(cfg, train._dataset).to(cfg["device"])
    trainer = get_trainer(cfg["MODEL_TYPE"], cfg["model"])(cfg, net)
    start = time.perf_counter()
    best_valid, best_result = trainer.fit(train, valid, saved=True, show_progress=False)
    seconds = time.perf_counter() - start
    result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    epochs = len(trainer.train_loss_dict)   # one entry per trained epoch
    print(json.dumps({
        "model": model, "seconds": seconds, "epochs": epochs,
        # cur_step: validations since the best one (eval_step 1: epochs since the best)
        "best_epoch": epochs - trainer.cur_step,
        "valid": {k: float(v) for k, v in best_result.items()},
        "test": {k: float(v) for k, v in result.items()},
        "n_users": dataset.user_num - 1, "n_items": dataset.item_num - 1,
        "train_rows": len(train.dataset)}))


if __name__ == "__main__":
    main()
