"""Tiny DDP segmentation: Sentinel-1 seasonal backscatter (s1grd) -> ESA WorldCover classes.

    torchrun --standalone --nproc-per-node 2 examples/train_ddp.py --data OUT --region conus --steps 20

Runs unchanged on CPU (gloo) and GPUs (nccl, one per process). Prints the loss averaged over ranks
at every step. Every rank gets the same number of batches per epoch (m3leo_hf.stream), so the
collectives of DDP never wait on a rank that ran out of data.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import m3leo_hf


def tiny_cnn(in_channels: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, classes, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="shard output folder (holds <region>/)")
    parser.add_argument("--region", nargs="+", default=["conus"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=32, help="centre crop/pad size in pixels")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)

    data = m3leo_hf.stream([os.path.join(args.data, r) for r in args.region], modalities=["s1grd", "esaworldcover"],
                           split="train", batch_size=args.batch_size, normalize=True, spatial_size=args.size,
                           missing="skip", seed=args.seed)
    loader = m3leo_hf.StatefulLoader(data, num_workers=args.workers, pin_memory=cuda)
    classes = len(data.transforms["esaworldcover"].modality.class_codes)
    model = DistributedDataParallel(tiny_cnn(16, classes).to(device), device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=255)
    if dist.get_rank() == 0:
        print(f"{dist.get_world_size()} ranks on {device.type}, {len(loader)} batches per rank per epoch", flush=True)
    if len(loader) == 0:
        raise SystemExit(f"the train split of {args.region} gives no full batch of {args.batch_size} per rank on "
                         f"{dist.get_world_size()} ranks: add regions or lower --batch-size")

    step, epoch = 0, 0
    while step < args.steps:
        loader.set_epoch(epoch)
        for batch in loader:
            images = batch["s1grd"].to(device, non_blocking=True)
            target = batch["esaworldcover"]["label"].to(device, non_blocking=True)
            loss = loss_fn(model(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            if dist.get_rank() == 0:
                print(f"step {step} epoch {epoch} loss {mean.item() / dist.get_world_size():.4f}", flush=True)
            step += 1
            if step == args.steps:
                break
        epoch += 1
    # Teardown order matters with gloo: a gloo thread still releasing the last all_reduce's tensor needs the GIL,
    # so the process group must not be destroyed under the GIL before that (DDP's reducer would destroy it so,
    # as the last holder): drop the model first, then let destroy_process_group release the group.
    dist.barrier()
    del model, optimizer
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
