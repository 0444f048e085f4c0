"""Train or resume the RLNET Pong agent: ``python scripts/train_pong.py --resume``."""

import click
import torch

from rl_insens.train import TrainConfig, train


@click.command()
@click.option("--out-dir", default=TrainConfig.out_dir, show_default=True)
@click.option("--total-steps", default=TrainConfig.total_steps, show_default=True,
              help="Schedule length in agent steps.")
@click.option("--stop-at", type=int, default=None, help="Checkpoint and stop after this many steps.")
@click.option("--seed", default=TrainConfig.seed, show_default=True)
@click.option("--n-envs", default=TrainConfig.n_envs, show_default=True)
@click.option("--n-steps", default=TrainConfig.n_steps, show_default=True)
@click.option("--batch-size", default=TrainConfig.batch_size, show_default=True)
@click.option("--checkpoint-every", default=TrainConfig.checkpoint_every, show_default=True)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads.")
@click.option("--dummy-envs", is_flag=True, help="Step environments in-process.")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/resume.zip if it exists.")
def main(out_dir, total_steps, stop_at, seed, n_envs, n_steps, batch_size, checkpoint_every,
         threads, dummy_envs, resume):
    torch.set_num_threads(threads)
    cfg = TrainConfig(out_dir=out_dir, total_steps=total_steps, stop_at=stop_at, seed=seed,
                      n_envs=n_envs, n_steps=n_steps, batch_size=batch_size,
                      checkpoint_every=checkpoint_every, subprocess_envs=not dummy_envs)
    train(cfg, resume=resume)


if __name__ == "__main__":
    main()
