"""Converts pretrained PyTorch pickles into files rl-run reads (safetensors),
with the project's .venv (which has torch and safetensors):

  .venv/bin/python scripts/convert_weights.py diffusers DIR
      DIR/diffusion_pytorch_model.bin (a diffusers UNet2DModel pickle, such
      as google/ddpm-cifar10-32's) -> DIR/diffusion_pytorch_model.safetensors,
      names unchanged (rl-run reads the 2022 attention names too).

  .venv/bin/python scripts/convert_weights.py ddim CKPT OUT_DIR --resolution 32
      A state dict of the original DDPM/DDIM PyTorch code (the layout of the
      DDIM and FastDPM repositories: temb.dense.0, down.0.block.0.norm1,
      down.1.attn.0.q, mid.block_1, up.3.upsample.conv, ...) -> OUT_DIR with
      a diffusers config.json and diffusion_pytorch_model.safetensors under
      diffusers' names, the 1x1-conv attention weights as linear weights.
      The architecture (channels, multipliers, blocks, attention levels) is
      read off the tensors; the resolution is not in them and must be given.
      A checkpoint saved as [model, optimizer, epoch, step, ema] takes the
      model's state dict, or the EMA's with --ema.

  .venv/bin/python scripts/convert_weights.py fid-inception PTH OUT.pt
      pytorch-fid's FID Inception weights (pt_inception-2015-12-05-*.pth)
      -> OUT.pt, a TorchScript module that `rl-run fid --features OUT.pt`
      loads: pytorch-fid's own network (pytorch-fid and torchvision, which
      scripts/setup.sh installs into .venv) built with those weights, taking
      [N, 3, 299, 299] in [-1, 1] and returning the 2048 pool3 features
      [N, 2048] (rl-run resizes and scales as pytorch-fid does, so the
      network is saved without its own resize and scaling).

Nothing is downloaded; the input is never modified.
"""

import argparse
import json
import os
import re
import sys

import torch
from safetensors.torch import save_file


def load_pickle(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unpickling failure plainly
        sys.exit(f"error: {path}: not a readable PyTorch pickle: {e}")


def tensors_only(state, path):
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        sys.exit(f"error: {path}: expected a state dict (names to tensors)")
    return {k: v.contiguous() for k, v in state.items()}


def convert_diffusers(folder):
    src = os.path.join(folder, "diffusion_pytorch_model.bin")
    dst = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if not os.path.isfile(src):
        sys.exit(f"error: {src}: no such file")
    state = tensors_only(load_pickle(src), src)
    save_file(state, dst)
    print(f"wrote {len(state)} tensors to {dst}")


def pick_state_dict(obj, ema, path):
    if isinstance(obj, (list, tuple)):
        if not obj:
            sys.exit(f"error: {path}: an empty list")
        obj = obj[-1] if ema else obj[0]
    elif ema:
        sys.exit(f"error: {path}: --ema needs a checkpoint saved as [model, ..., ema]")
    state = tensors_only(obj, path)
    # Saved from nn.DataParallel: every name starts with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


RESNET = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj",
          "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def ddim_name(key, levels):
    """Today's diffusers name of a tensor of the original DDPM/DDIM layout."""
    fixed = {"temb.dense.0": "time_embedding.linear_1", "temb.dense.1": "time_embedding.linear_2",
             "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
    module, _, param = key.rpartition(".")
    if module in fixed:
        return f"{fixed[module]}.{param}"
    m = re.fullmatch(r"(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(\w+)", module)
    if m:
        side, level, kind, j, part = m.groups()
        index = int(level) if side == "down" else levels - 1 - int(level)
        table = RESNET if kind == "block" else ATTENTION
        if part not in table:
            raise KeyError(key)
        group = "resnets" if kind == "block" else "attentions"
        return f"{side}_blocks.{index}.{group}.{j}.{table[part]}.{param}"
    m = re.fullmatch(r"down\.(\d+)\.downsample\.conv", module)
    if m:
        return f"down_blocks.{m.group(1)}.downsamplers.0.conv.{param}"
    m = re.fullmatch(r"up\.(\d+)\.upsample\.conv", module)
    if m:
        return f"up_blocks.{levels - 1 - int(m.group(1))}.upsamplers.0.conv.{param}"
    m = re.fullmatch(r"mid\.(block_1|block_2|attn_1)\.(\w+)", module)
    if m:
        block, part = m.groups()
        if block == "attn_1":
            return f"mid_block.attentions.0.{ATTENTION[part]}.{param}"
        return f"mid_block.resnets.{0 if block == 'block_1' else 1}.{RESNET[part]}.{param}"
    raise KeyError(key)


def ddim_config(state, resolution, dropout):
    """The diffusers config of a DDPM/DDIM-layout state dict."""
    if "conv_in.weight" not in state:
        sys.exit("error: not the DDPM/DDIM layout: no conv_in.weight")
    ch, in_channels = state["conv_in.weight"].shape[:2]
    levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down."))
    blocks = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("down.0.block."))
    widths = [state[f"down.{i}.block.0.conv1.weight"].shape[0] for i in range(levels)]
    attention = [any(k.startswith(f"down.{i}.attn.") for k in state) for i in range(levels)]
    if resolution % (1 << (levels - 1)):
        sys.exit(f"error: --resolution {resolution} is not divisible by 2^{levels - 1}")
    return {
        "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
        "block_out_channels": widths, "center_input_sample": False,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "downsample_padding": 0, "dropout": dropout, "flip_sin_to_cos": False, "freq_shift": 1,
        "in_channels": int(in_channels), "out_channels": int(state["conv_out.weight"].shape[0]),
        "layers_per_block": blocks, "mid_block_scale_factor": 1, "norm_eps": 1e-6,
        "norm_num_groups": 32, "sample_size": resolution, "time_embedding_type": "positional",
        "add_attention": any(k.startswith("mid.attn_1.") for k in state),
    } | {"_converted_from": "DDPM/DDIM layout", "_base_channels": int(ch)}


def convert_ddim(ckpt, out_dir, resolution, dropout, ema):
    state = pick_state_dict(load_pickle(ckpt), ema, ckpt)
    config = ddim_config(state, resolution, dropout)
    levels = len(config["block_out_channels"])
    out = {}
    for key, tensor in state.items():
        try:
            name = ddim_name(key, levels)
        except KeyError:
            sys.exit(f"error: {ckpt}: tensor {key} is not part of the DDPM/DDIM U-Net layout")
        if ".attentions." in name and tensor.dim() == 4:
            tensor = tensor[:, :, 0, 0]  # a 1x1 convolution is a linear layer
        out[name] = tensor.contiguous()
    os.makedirs(out_dir, exist_ok=True)
    save_file(out, os.path.join(out_dir, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {len(out)} tensors and config.json to {out_dir}")


def convert_fid_inception(pth, out):
    """pytorch-fid's FID Inception with the weights of `pth`, traced to TorchScript."""
    try:
        import pytorch_fid.inception as inception
    except ImportError:
        sys.exit("error: fid-inception needs pytorch-fid (pip install pytorch-fid; scripts/setup.sh puts it in .venv)")
    state = tensors_only(load_pickle(pth), pth)
    # pytorch-fid's builder downloads its weights; hand it these instead.
    inception.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        net = inception.InceptionV3(
            [inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
            resize_input=False,
            normalize_input=False,
            use_fid_inception=True,
        ).eval()
    except RuntimeError as e:
        sys.exit(f"error: {pth}: not pytorch-fid's FID Inception weights: {e}")

    class Pool3(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[0].flatten(1)

    with torch.no_grad():
        traced = torch.jit.trace(Pool3(net).eval(), torch.zeros(2, 3, 299, 299))
    torch.jit.save(traced, out)
    print(f"wrote pytorch-fid's FID Inception with the weights of {pth} to {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="layout", required=True)
    d = sub.add_parser("diffusers", help="a diffusers .bin pickle to safetensors, in place")
    d.add_argument("folder")
    o = sub.add_parser("ddim", help="an original DDPM/DDIM state dict to a diffusers folder")
    o.add_argument("checkpoint")
    o.add_argument("out_dir")
    o.add_argument("--resolution", type=int, required=True, help="image height and width")
    o.add_argument("--dropout", type=float, default=0.0, help="dropout for further training")
    o.add_argument("--ema", action="store_true", help="take the EMA weights of [model, ..., ema]")
    f = sub.add_parser("fid-inception", help="pytorch-fid's Inception weights (.pth) to TorchScript")
    f.add_argument("pth")
    f.add_argument("out")
    args = parser.parse_args()
    if args.layout == "diffusers":
        convert_diffusers(args.folder)
    elif args.layout == "fid-inception":
        convert_fid_inception(args.pth, args.out)
    else:
        convert_ddim(args.checkpoint, args.out_dir, args.resolution, args.dropout, args.ema)


if __name__ == "__main__":
    main()
