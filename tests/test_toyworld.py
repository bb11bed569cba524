"""The toy world: synthetic data, toy text encoder, the two trained toy Wan 2.1 models and their
loading through ComfyUI's own loaders, shortened training runs (the loss falls), a smoke sample."""

from __future__ import annotations

import math

import pytest
import torch

from boxdirector.toyworld import data, text

pytestmark = pytest.mark.comfy


# --- data --------------------------------------------------------------------------------------

def test_clip_is_deterministic_and_shaped():
    a, b = data.make_clip(7), data.make_clip(7)
    assert torch.equal(a.video, b.video) and a.caption == b.caption and torch.equal(a.boxes, b.boxes)
    assert a.video.shape == (data.FRAMES, data.SIZE, data.SIZE, 3)
    assert 0 <= a.video.min() and a.video.max() <= 1
    assert a.boxes.shape == (len(a.colors), data.FRAMES, 4)
    assert not torch.equal(data.make_clip(8).video, a.video)


def test_captions_colours_shapes_and_boxes_match_pixels():
    seen_colors, seen_shapes, seen_counts = set(), set(), set()
    for seed in range(40):
        c = data.make_clip(seed)
        seen_colors.update(c.colors)
        seen_shapes.update(c.shapes)
        seen_counts.add(len(c.colors))
        assert c.caption == data.caption_for(c.colors, c.shapes)
        assert len(set(c.colors)) == len(c.colors)  # distinct colours: the caption is unambiguous
        for o, (col, shp) in enumerate(zip(c.colors, c.shapes)):
            assert f"{data.COLORS[col]} {data.SHAPES[shp]}" in c.caption
            for f in (0, data.FRAMES - 1):
                present = data.color_presence(c.video[f], data.COLORS[col], 0.15)
                x0, y0, x1, y1 = (c.boxes[o, f] * data.SIZE).tolist()
                inside = present[max(0, int(y0)):int(math.ceil(y1)), max(0, int(x0)):int(math.ceil(x1))].sum()
                # the object's colour lies (almost) only inside its box (it can be partly covered)
                assert present.sum() <= inside + 4, (seed, o, f)
                if o == len(c.colors) - 1:  # drawn last: fully visible, fills a good part of its box
                    area = (x1 - x0) * (y1 - y0)
                    assert inside >= 0.4 * area, (seed, o, f, inside.item(), area)
    assert seen_colors == set(range(len(data.COLORS))) and seen_shapes == set(range(len(data.SHAPES)))
    assert seen_counts == {1, 2}


def test_paths_move_and_spread():
    centres = torch.cat([data.make_clip(s).centers[:, 0] for s in range(60)]) / data.SIZE
    assert centres.std(0).min() > 0.18  # spread over the frame
    moving = sum(bool((data.make_clip(s).centers[:, -1] - data.make_clip(s).centers[:, 0]).abs().max() > 10)
                 for s in range(30))
    assert 10 <= moving < 30  # most move, some stand still


def test_square_is_the_bounding_square_of_its_circle():
    """A square of 'radius' r holds the circle of radius r and adds its four corners (about 27 % more
    area), so the two differ by whole latent cells, not by slivers (data.SQUARE_HALF_SIDE); the
    boxes of the two are the same."""
    cx = cy = torch.tensor([64.0])
    circle, square = (data._alpha(data.SHAPES.index(s), cx, cy, 20.0, 128)[0] for s in ("circle", "square"))
    assert (square >= circle - 1e-6).all()
    assert square.sum().item() == pytest.approx(40 * 40, rel=0.01)
    assert square.sum().item() / circle.sum().item() == pytest.approx(4 / math.pi, rel=0.02)
    boxes = [data._box(data.SHAPES.index(s), cx, cy, 20.0, 128) for s in ("circle", "square")]
    assert torch.equal(*boxes)


def test_latent_cache_is_keyed_by_the_data_version(monkeypatch, tmp_path):
    """Encoded clips of one world are never reused for another: the cache file name changes with
    data.DATA_VERSION (and with the VAE's bytes)."""
    from boxdirector.toyworld import install, train_dit

    vae = install.WEIGHTS / install.VAE_NAME
    here = train_dit.LatentPool(vae, tmp_path, 1).path
    assert here.parent == tmp_path and train_dit.LatentPool(vae, tmp_path, 1).path == here
    monkeypatch.setattr(data, "DATA_VERSION", data.DATA_VERSION + 1)
    assert train_dit.LatentPool(vae, tmp_path, 1).path != here


# --- toy text encoder ----------------------------------------------------------------------------

def test_tokenizer_layout():
    tok = text.ToyWordTokenizer()
    ids = tok.ids("A red circle, and a blue square")
    assert len(ids) == text.MAX_TOKENS
    assert tok.decode(ids) == "a red circle and and a blue square <end>"
    assert tok.ids("a purple circle")[1] == text.UNK
    assert tok.ids("")[:2] == [text.END, text.PAD]


def test_shipped_tables_are_the_seeded_ones_and_encoder_is_contextual():
    shipped = text.load_tables()
    for k, v in text.build_tables().items():
        assert torch.equal(shipped[k], v), k
    enc = text.ToyTextEncoder()
    e = enc.encode_text(["a red circle and a blue square", "a red square", ""])
    assert e.shape == (3, text.MAX_TOKENS, text.WIDTH)
    assert torch.all(e[0, 8:] == 0) and torch.all(e[2, 1:] == 0)  # padding is zeros
    assert not torch.allclose(e[0, 1], e[1, 1])  # "red" knows its shape
    assert torch.allclose(e[0, 1], enc.encode_text(["a red circle"])[0, 1])  # ... and only its own phrase


def test_toy_clip_through_cliptextencode_and_subject_tokens(comfy, pack_nodes):
    from boxdirector.nodes.subject_tokens import find_subject_tokens

    assert "BoxDirector.ToyTextEncoderLoader" in pack_nodes
    node = pack_nodes["BoxDirector.ToyTextEncoderLoader"]
    assert node.GET_SCHEMA().category == "Box Director/toy world"
    clip = node.execute().result[0]
    prompt = "a red circle and a blue square"
    (cond,) = comfy.CLIPTextEncode().encode(clip, prompt)
    assert cond[0][0].shape == (1, text.MAX_TOKENS, text.WIDTH)
    assert torch.allclose(cond[0][0][0], text.ToyTextEncoder().encode_text([prompt])[0])
    st = find_subject_tokens(clip, prompt, ["red circle", "blue square"], ["a", "b"], "wan21")
    assert st.positions == ((1, 2), (5, 6)) and st.special == (7,) and st.length == text.MAX_TOKENS


# --- shipped weights through ComfyUI's loaders ---------------------------------------------------

def test_weights_are_small():
    """Issue 5: all weights the repository carries at most ~20 MB together -- the shipped ones and
    any candidate DiT kept in toyworld/candidates/ for a later training session to continue."""
    total = sum(p.stat().st_size for p in text.WEIGHTS.parent.glob("*.safetensors"))
    total += sum(p.stat().st_size for p in (text.WEIGHTS.parent.parent / "candidates").glob("*.safetensors"))
    assert total <= 20 * 2**20, total


def test_link_models(tmp_path):
    from boxdirector.toyworld import install

    links = install.link_models(tmp_path)
    assert (tmp_path / "models" / "diffusion_models" / install.DIT_NAME).resolve() == install.WEIGHTS / install.DIT_NAME
    assert (tmp_path / "models" / "vae" / install.VAE_NAME).is_file()
    assert install.link_models(tmp_path) == links  # idempotent


@pytest.fixture(scope="module")
def toy_models(comfy):
    from boxdirector.toyworld import sanity

    return sanity.load_models(shift=sanity.DEFAULTS["shift"])


def test_dit_loads_as_wan21_t2v(comfy):
    import comfy.model_base
    import comfy.sd

    from boxdirector.toyworld import install, train_dit

    patcher = comfy.sd.load_diffusion_model(str(install.WEIGHTS / install.DIT_NAME))
    model = patcher.model
    assert type(model) is comfy.model_base.WAN21
    cfg = model.model_config.unet_config
    want = train_dit.dit_config()
    for k in ("dim", "num_layers", "ffn_dim", "num_heads", "in_dim", "out_dim", "model_type"):
        assert cfg[k] == want[k], k
    assert model.diffusion_model.text_embedding[0].weight.shape[1] == text.WIDTH
    assert type(model.latent_format).__name__ == "Wan21"


def test_vae_loads_and_round_trips(comfy):
    import comfy.sd
    import comfy.utils

    from boxdirector.toyworld import install

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(install.WEIGHTS / install.VAE_NAME)))
    assert vae.latent_channels == 16
    clip = data.make_clip(123456, frames=9, size=64)
    latent = vae.encode(clip.video)  # ComfyUI IMAGE layout [F, H, W, 3]
    assert latent.shape == (1, 16, 3, 8, 8)
    # the latent, normalised as ComfyUI feeds it to the DiT, is roughly zero-mean, unit-scale
    import comfy.latent_formats

    z = comfy.latent_formats.Wan21().process_in(latent)
    assert abs(z.mean().item()) < 0.5 and 0.3 < z.std().item() < 2.0
    out = vae.decode(latent)
    assert out.shape[-4:] == (9, 64, 64, 3)
    # the object's colour comes back where it was
    col = data.COLORS[clip.colors[-1]]
    want = data.color_presence(clip.video[0], col, 0.2)
    got = data.color_presence(out.reshape(-1, 64, 64, 3)[0], col, 0.35)
    assert (want & got).sum() >= 0.3 * want.sum()


def test_vae_draws_every_toy_colour_and_shape(comfy):
    """The VAE is the ceiling of everything generated: a colour or shape it cannot round-trip can
    never be generated. (The session-2 VAE decoded green as dark grey and every green prompt
    failed; the second generation, trained from `--identity-init`, scores colour 100 % and shape
    98 % on 60 frames.) 30 single ground-truth frames, scored by the sanity classifiers; every
    colour must come back with its shape in at least three of four frames."""
    from boxdirector.toyworld import sanity

    r = sanity.vae_roundtrip(samples=30)
    assert r["colour"] >= 0.95 and r["shape"] >= 0.9, r
    for colour, hits in r["per_colour"].items():
        got, of = map(int, hits.split("/"))
        assert got >= 0.75 * of, (colour, r)


def test_smoke_sample_draws_the_prompted_colour(toy_models):
    """End to end through ComfyUI (CLIPTextEncode, KSampler, VAEDecode), one sample per toy colour.
    The shipped pair draws the prompted colour in every sanity sample (30 of 30; the session-6 DiT
    45 of 45 at cfg 2, 3 and 5); the first generation never drew green. Shapes: see the next test."""
    from boxdirector.toyworld import sanity

    nodes, model, vae, clip = toy_models
    hits = 0
    for color in range(len(data.COLORS)):
        video = sanity.generate(nodes, model, vae, clip, data.caption_for([color], [color % 3]), seed=1000 + color)
        assert video.shape == (data.FRAMES, data.SIZE, data.SIZE, 3)
        got, _ = sanity.classify_color(video)
        hits += got == color
    assert hits >= 4


def test_shipped_dit_draws_shapes_not_only_blobs(toy_models):
    """The first 15 prompts and seeds of `python -m toyworld.sanity` (five of each shape), scored
    by sanity's strict shape score: the prompted ideal shape fits the blob best and as well as the
    VAE draws it (true clips through the VAE pass 97 %; a blob of the right colour does not). The
    session-13 DiT passed 7 of these 15 when it was shipped (47 % of 30), the shipped six-block one
    scores 77 % of 30; the session-6 DiT drew blobs and passed 3 of these 15 (10 % of 30; 0 % with
    euler), so this fails if a blob-drawing DiT comes back. Issue 5's bar is 80 % over sanity's
    samples (toyworld/README.md, "Status")."""
    from boxdirector.toyworld import sanity

    nodes, model, vae, clip = toy_models
    strict = []
    for i in range(15):
        color, shape = i % len(data.COLORS), (i // len(data.COLORS)) % len(data.SHAPES)
        video = sanity.generate(nodes, model, vae, clip, data.caption_for([color], [shape]), seed=1000 + i)
        r = sanity.score_video(video, color, shape)
        strict.append(bool(r["color_ok"] and r["shape_strict"]))
    assert sum(strict) >= 5, strict


# --- shortened training runs: the loss falls -----------------------------------------------------

def test_vae_training_loss_falls(tmp_path):
    from boxdirector.toyworld import train_vae

    r = train_vae.main(["--steps", "16", "--num-clips", "2", "--batch", "4", "--video-batch", "2", "--crop", "32",
                        "--video-frac", "0.25", "--lr", "3e-3", "--warmup", "3", "--stat-clips", "1",
                        "--log-every", "100", "--out", str(tmp_path / "vae.safetensors")])
    first, last = sum(r["losses"][:3]) / 3, sum(r["losses"][9:12]) / 3  # image phase only
    assert last < 0.8 * first, r["losses"]
    import comfy.sd
    import comfy.utils

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tmp_path / "vae.safetensors")))
    assert vae.latent_channels == 16


@pytest.mark.parametrize("precision", [[], ["--bf16"]], ids=["fp32", "bf16"])
def test_dit_training_loss_falls(tmp_path, precision):
    from boxdirector.toyworld import install, train_dit

    r = train_dit.main([*precision, "--steps", "16", "--batch", "4", "--pool-init", "4", "--encode-per-step", "0",
                        "--cache-dir", "", "--warmup", "3", "--lr", "2e-3", "--log-every", "100",
                        "--vae", str(install.WEIGHTS / install.VAE_NAME), "--out", str(tmp_path / "dit.safetensors")])
    first, last = sum(r["losses"][:4]) / 4, sum(r["losses"][-4:]) / 4
    assert last < 0.9 * first, r["losses"]
    import comfy.model_base
    import comfy.sd

    assert type(comfy.sd.load_diffusion_model(str(tmp_path / "dit.safetensors")).model) is comfy.model_base.WAN21


def test_vae_reinit_restarts_a_block_as_the_identity(comfy):
    """``train_vae --reinit``: a re-initialised residual block passes its input on unchanged (so the
    rest of a trained VAE keeps working), and its weights are fresh, not the trained ones."""
    from boxdirector.toyworld import train_vae
    from boxdirector.toyworld._comfy import init_weights

    vae = train_vae.build_vae(8)
    init_weights(vae, 0)
    block = vae.get_submodule("encoder.downsamples.0")
    before = block.residual[2].weight.detach().clone()
    x = torch.randn(1, 8, 1, 12, 12)
    with torch.no_grad():
        assert not torch.allclose(block(x), x)
        train_vae.reinit(block, seed=5)
        assert torch.equal(block(x), x)
    assert not torch.equal(block.residual[2].weight, before)


def _perturbed_dit(dim: int, layers: int, ffn: int, seed: int):
    """A seeded DiT and its state dict with every weight non-zero: init_dit starts the head at zero,
    so without the noise the blocks would not matter to the output the tests compare."""
    from boxdirector.toyworld import train_dit

    torch.manual_seed(seed)
    model = train_dit.build_dit(train_dit.dit_config(dim, layers, ffn))
    train_dit.init_dit(model, 0)
    sd = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    return model, sd


def test_dit_grown_deeper_computes_what_the_shallow_one_did(comfy):
    """``train_dit --init F --layers N``: a 2-block DiT deepened to 3 blocks gives the same output
    (the copied block starts as the identity), and a copy still gets gradients to learn with."""
    from boxdirector.toyworld import _comfy, train_dit

    small, sd = _perturbed_dit(128, 2, 64, seed=0)
    deep = train_dit.build_dit(train_dit.dit_config(dim=128, layers=3, ffn=64))
    deep.load_state_dict(train_dit.grow_state_dict(sd, 3))
    x, t, ctx = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 4, text.WIDTH)
    with _comfy.in_training():   # as train_dit runs: differentiable rope in newer ComfyUI
        a = small(x, t, ctx)
        b = deep(x, t, ctx)
        assert a.abs().mean() > 1e-3
        torch.testing.assert_close(b, a)
        b.square().mean().backward()
    assert deep.blocks[1].self_attn.o.weight.grad.abs().sum() > 0  # the copy (of block 0) learns
    with pytest.raises(ValueError, match="--layers 1"):
        train_dit.grow_state_dict(sd, 1)


def test_dit_widened_to_two_heads_computes_what_the_narrow_one_did(comfy):
    """``train_dit --init F --dim 256 --ffn 2x``: a one-head DiT widened to two heads (what
    ComfyUI reads from dim 256) gives the same output, its two heads start as equal copies whose
    input weights differ, so training can pull them apart; a width that is no multiple is refused."""
    from boxdirector.toyworld import train_dit

    layers = 2
    narrow, sd = _perturbed_dit(128, layers, 512, seed=1)  # one head (the shipped DiT has two)
    wide_sd = train_dit.widen_state_dict(sd, 256, 1024, seed=3)
    wide = train_dit.build_dit(train_dit.dit_config(256, layers, 1024))
    wide.load_state_dict(wide_sd)
    assert wide.num_heads == 2 and wide.blocks[0].self_attn.num_heads == 2
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 16, 2, 8, 8, generator=g), torch.tensor([300.0, 700.0])
    ctx = text.ToyTextEncoder().encode_text(["a red square", "a blue circle and a white triangle"])
    with torch.no_grad():
        a, b = narrow(x, t, ctx), wide(x, t, ctx)
    assert a.abs().mean() > 1e-2
    torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-3)
    o = wide_sd["blocks.0.self_attn.o.weight"]
    assert not torch.equal(o[:, :128], o[:, 128:])  # the copies' input weights differ
    torch.testing.assert_close(o[:128, :128] + o[:128, 128:], sd["blocks.0.self_attn.o.weight"])
    with pytest.raises(ValueError, match="multiples"):
        train_dit.widen_state_dict(sd, 192, 512)

def test_channel_shuffle_permutes_rgb_of_the_same_crop():
    """``train_vae --channel-shuffle``: a shuffled crop is the same window with its RGB channels
    permuted (green objects become as common as red ones), and 0 leaves crops untouched."""
    from boxdirector.toyworld import train_vae

    def crop(shuffle, seed):
        return train_vae.crops([7], 1, 32, torch.Generator().manual_seed(seed), shuffle)

    plain = crop(0.0, 3)
    shuffled = [crop(1.0, s) for s in range(3, 9)]
    for s, got in zip(range(3, 9), shuffled):
        assert torch.equal(crop(0.0, s).sort(dim=1).values, got.sort(dim=1).values)  # same pixels, channels moved
    assert torch.equal(crop(0.0, 3), plain)
    assert any(not torch.equal(crop(0.0, s), got) for s, got in zip(range(3, 9), shuffled))


def test_object_masks_cover_each_objects_box_on_its_latent_frames():
    """``train_dit --obj-weight`` weights the loss on these cells: every latent cell whose centre
    lies in an object's box on one of the latent frame's pixel frames, and nothing far from all."""
    from boxdirector.toyworld import train_dit

    seed = 11
    m = train_dit.object_masks([seed])[0]                       # [5, 16, 16]
    boxes = data.make_clip(seed).boxes * 16                     # latent cells
    assert m.shape == (5, 16, 16) and 0 < m.float().mean() < 0.6
    for t, frames in enumerate([[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]):
        want = torch.zeros(16, 16, dtype=torch.bool)
        for f in frames:
            for x0, y0, x1, y1 in boxes[:, f].tolist():
                cx = torch.arange(16) + 0.5
                want |= ((cx[:, None] >= y0) & (cx[:, None] <= y1)) & ((cx[None, :] >= x0) & (cx[None, :] <= x1))
        assert (m[t] | ~want).all(), t                          # every cell centre inside a box is marked
        grown = torch.nn.functional.max_pool2d(want[None, None].float(), 3, 1, 1)[0, 0].bool()
        assert not (m[t] & ~grown).any(), t                     # and nothing more than a cell away from one


def test_identity_init_lets_the_input_reach_the_decoded_image(comfy):
    """``train_vae --identity-init``: on step 1 the decoded image already follows the input (its
    spread over a batch of different crops is a good part of the input's), where PyTorch's default
    init decodes nearly the same flat image for every input -- the start that made fresh VAEs
    learn a palette of a few bright colours (toyworld/README.md)."""
    from boxdirector.toyworld import train_vae

    x = train_vae.crops(list(range(8)), 1, 32, torch.Generator().manual_seed(0))

    def spread(identity: bool) -> float:
        vae = train_vae.fresh_vae(8, seed=4, identity=identity)
        with torch.no_grad():
            mu, _ = train_vae.encode_stats(vae, x)
            return (vae.decode(mu).std(0).mean() / x.std(0).mean()).item()

    fresh, default = spread(True), spread(False)
    assert fresh > 0.4 and fresh > 4 * default, (fresh, default)


def test_latent_noise_is_relative_to_mu_and_minus_one_samples_the_posterior():
    """``train_vae --latent-noise``: S >= 0 adds noise of S times mu's spread (0: mu itself), the
    posterior's sigma ignored; -1 keeps the posterior sample mu + exp(log_var / 2) * eps."""
    from boxdirector.toyworld import train_vae

    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 16, 2, 6, 6, generator=g) * 3
    log_var = torch.full_like(mu, 2.0)
    eps = torch.randn(mu.shape, generator=g)
    assert torch.equal(train_vae.decoder_input(mu, log_var, 0.0, eps), mu)
    got = train_vae.decoder_input(mu, log_var, 0.05, eps) - mu
    assert torch.allclose(got, 0.05 * mu.std() * eps, atol=1e-5)
    assert torch.allclose(train_vae.decoder_input(mu, log_var, -1.0, eps), mu + math.e * eps)


def test_fractional_encode_per_step_spreads_the_clips():
    """``train_dit --encode-per-step``: 0.5 encodes one clip every other step, 2 two per step, and
    after n steps exactly floor(n * rate) clips were encoded."""
    from boxdirector.toyworld import train_dit

    assert [train_dit.clips_due(s, 0.5) for s in range(6)] == [0, 1, 0, 1, 0, 1]
    assert [train_dit.clips_due(s, 2) for s in range(3)] == [2, 2, 2]
    for rate in (0.3, 0.5, 1.25):
        assert sum(train_dit.clips_due(s, rate) for s in range(40)) == int(40 * rate)


def test_mid_noise_moves_training_samples_to_the_middle_of_the_schedule():
    """``train_dit --mid-noise``: a share of the noise levels comes from a logit-normal around
    --mid-centre. Without it the draw is exactly the old shift(u) one (the shipped commands
    reproduce); with it, more samples land where shapes are decided (sigma 0.2-0.65) and every
    sigma stays inside (0, 1)."""
    from boxdirector.toyworld import train_dit

    def draw(mid, seed=3, n=20000):
        return train_dit.sample_sigma(torch.Generator().manual_seed(seed), n, 3.0, mid)

    u = torch.rand(20000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(draw(0.0), 3 * u / (1 + 2 * u))

    def band(s):
        return ((s > 0.2) & (s < 0.65)).float().mean().item()

    plain, mid = draw(0.0), draw(0.7)
    assert band(plain) < 0.35 and band(mid) > 0.55, (band(plain), band(mid))
    assert 0 < mid.min() and mid.max() < 1
    assert (mid > 0.8).float().mean() > 0.08  # high noise (layout) is still trained


@pytest.mark.parametrize("flag,value", [("--mid-noise", "1.5"), ("--mid-centre", "1"), ("--mid-spread", "0")])
def test_mid_noise_options_reject_values_outside_their_range(flag, value, capsys):
    """A bad --mid-* value stops train_dit before any work, naming the option and the valid range,
    instead of a math domain error or a silently degenerate noise density."""
    from boxdirector.toyworld import train_dit

    with pytest.raises(SystemExit):
        train_dit.main([flag, value, "--steps", "1"])
    err = capsys.readouterr().err
    assert flag in err and "give a" in err, err


def test_train_dit_widens_init_to_two_heads_and_refuses_widths_it_cannot_reach(tmp_path, capsys):
    """``train_dit --init F --dim 256``: the run starts from the widened file and exports a two-head
    DiT that UNETLoader's detection reads as WAN21 with 2 heads; a width that is no multiple of the
    file's stops with a usage error naming --dim, not a state-dict shape traceback."""
    from boxdirector.toyworld import install, train_dit

    vae = str(install.WEIGHTS / install.VAE_NAME)
    # a one-head file to widen (the shipped DiT already has two heads)
    init = str(tmp_path / "narrow.safetensors")
    train_dit.main(["--dim", "128", "--ffn", "512", "--steps", "1", "--batch", "2", "--pool-init", "2",
                    "--encode-per-step", "0", "--cache-dir", "", "--vae", vae, "--out", init])
    with pytest.raises(SystemExit):
        train_dit.main(["--init", init, "--dim", "192", "--steps", "1", "--cache-dir", "", "--vae", vae])
    assert "--dim 192" in capsys.readouterr().err
    out = tmp_path / "wide.safetensors"
    train_dit.main(["--init", init, "--dim", "256", "--ffn", "1024", "--steps", "1", "--batch", "2", "--pool-init", "2",
                    "--encode-per-step", "0", "--cache-dir", "", "--vae", vae, "--out", str(out)])
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(out)).model.diffusion_model
    assert model.dim == 256 and model.num_heads == 2


def test_sanity_object_area_is_the_prompted_objects_share_of_the_frame():
    """``sanity.score_video``'s area: the share of the frame the prompted colour's largest blob
    covers (mean over the scored frames). It is how oversized blobs show up in the figures, so it
    must match the object's real size on ground truth and be 0 where the colour is absent."""
    from boxdirector.toyworld import sanity

    c = data.make_clip(5003, n_objects=1)
    colour = data.COLORS[c.colors[0]]
    true = sum(data.color_presence(c.video[f], colour, 0.3).float().mean().item() for f in (0, 8, 16)) / 3
    got = sanity.score_video(c.video, c.colors[0], c.shapes[0])["area"]
    assert true > 0.005 and abs(got - true) <= 0.1 * true, (got, true)
    other = (c.colors[0] + 1) % len(data.COLORS)
    assert sanity.score_video(c.video, other, c.shapes[0])["area"] == 0.0
    # A frame-filling blob of the colour is measured as (almost) the whole frame.
    full = torch.tensor(data.COLOR_RGB[colour]).expand(data.FRAMES, data.SIZE, data.SIZE, 3).clone()
    assert sanity.score_video(full, c.colors[0], c.shapes[0])["area"] > 0.99


def test_sanity_steady_object_fails_an_object_that_splits_or_grows():
    """``score_video``'s ``steady``: a rigid ground-truth object passes; the same object split in
    two in one scored frame, grown twice as large in one, or missing from one does not."""
    from boxdirector.toyworld import sanity

    c = data.make_clip(5003, n_objects=1)
    assert sanity.score_video(c.video, c.colors[0], c.shapes[0])["steady"]
    rgb = torch.tensor(data.COLOR_RGB[data.COLORS[c.colors[0]]])
    bg = c.video[0, 0, 0].clone()

    def still(boxes_per_frame):
        v = bg.expand(data.FRAMES, data.SIZE, data.SIZE, 3).clone()
        for f in range(data.FRAMES):
            for x0, y0, x1, y1 in boxes_per_frame(f):
                v[f, y0:y1, x0:x1] = rgb
        return v

    square = [(40, 40, 70, 70)]
    assert sanity.score_video(still(lambda f: square), c.colors[0], 1)["steady"]
    split = still(lambda f: [(40, 40, 54, 70), (58, 40, 72, 70)] if f == 8 else square)  # two halves
    grown = still(lambda f: [(35, 35, 78, 78)] if f == 16 else square)                  # ~2x the area
    gone = still(lambda f: [] if f == 0 else square)
    for v in (split, grown, gone):
        assert not sanity.score_video(v, c.colors[0], 1)["steady"]


def test_sanity_redraw_scores_ground_truth_re_drawn_by_the_model(toy_models):
    """``sanity --redraw``: denoise 0 is the VAE's round trip of ground truth (the shipped VAE keeps
    colour and shape), and re-drawing from the start of the schedule is a fresh sample of the
    caption, still scored against it (colour at least, which the shipped DiT draws)."""
    from boxdirector.toyworld import sanity

    r = sanity.redraw(*toy_models, [0.0, 1.0], samples=2, steps=4)
    assert r[0.0] == (1.0, 1.0), r
    assert r[1.0][0] == 1.0, r


def test_fill_ratio_orders_the_true_shapes():
    """``sanity.fill_ratio`` (what ``--contrast`` compares): on ground-truth clips a square fills
    its box, a circle ~pi/4 of it, a triangle about half."""
    from boxdirector.toyworld import sanity

    got = {s: [] for s in data.SHAPES}
    for seed in range(5000, 5030):
        c = data.make_clip(seed, n_objects=1)
        got[data.SHAPES[c.shapes[0]]].append(sanity.fill_ratio(c.video, c.colors[0]))
    assert all(f > 0.9 for f in got["square"]), got["square"]
    assert all(0.7 < f < 0.88 for f in got["circle"]), got["circle"]
    assert all(0.4 < f < 0.65 for f in got["triangle"]), got["triangle"]


def test_shape_contrast_samples_each_shape_from_the_same_seed(toy_models):
    """``sanity --contrast``: one seed drawn under each shape word; the fills are real measurements
    of different drawings (the shape word reaches the model), each a ratio in 0..1."""
    from boxdirector.toyworld import sanity

    r = sanity.shape_contrast(*toy_models, samples=1, steps=4)
    fills = [r["fills"][s][0] for s in data.SHAPES]
    assert all(0.0 <= f <= 1.0 for f in fills), fills
    assert len(set(fills)) > 1, fills
    assert r["square_fuller"] in (0.0, 1.0)


def test_word_gap_is_zero_for_a_model_that_ignores_the_text(comfy):
    """``sanity --word-gap`` measures what the shape word changes in the denoising loss: the
    shipped DiT reads its caption (a non-zero gap), and the same DiT with every cross-attention
    output zeroed cannot, so naming the wrong shape costs it exactly nothing."""
    from boxdirector.toyworld import sanity, train_dit

    model, vae = sanity.load_dit_module(), train_dit.load_vae()
    gap = sanity.word_gap(model, vae, samples=2, sigmas=(0.45,))
    assert set(gap) == {"square->circle", "circle->square"}
    assert all(abs(row[0.45]) > 1e-4 for row in gap.values()), gap
    with torch.no_grad():
        for block in model.blocks:
            block.cross_attn.o.weight.zero_()
            block.cross_attn.o.bias.zero_()
    deaf = sanity.word_gap(model, vae, samples=2, sigmas=(0.45,))
    assert all(row[0.45] == 0.0 for row in deaf.values()), deaf


def test_strict_shape_score_passes_true_shapes_and_rejects_a_blob():
    """``score_video``'s ``shape_strict``: every ground-truth shape passes it (its own ideal shape
    fits it best, IoU > 0.9), but a shapeless blob whose fill ratio is merely nearer a circle's than
    a triangle's (what the toy DiT draws for both "circle" and "square") passes only the loose
    ``shape_ok`` for a circle."""
    from boxdirector.toyworld import sanity

    for seed in range(5000, 5015):
        c = data.make_clip(seed, n_objects=1)
        r = sanity.score_video(c.video, c.colors[0], c.shapes[0])
        assert r["shape_ok"] and r["shape_strict"], (seed, r)
        fit = sanity.shape_fit(sanity.object_mask(c.video, 8, c.colors[0]))
        shape = data.SHAPES[c.shapes[0]]
        assert max(fit, key=fit.get) == shape and fit[shape] > 0.9, (seed, fit)
    # Two overlapping discs on a diagonal: a lumpy blob.
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    blob = ((xx - 60) ** 2 + (yy - 60) ** 2 < 15 ** 2) | ((xx - 72) ** 2 + (yy - 72) ** 2 < 11 ** 2)
    video = torch.full((17, 128, 128, 3), 0.2)
    video[:, blob] = torch.tensor(data.COLOR_RGB["red"])
    red, circle = data.COLORS.index("red"), data.SHAPES.index("circle")
    assert 0.65 < sanity.fill_ratio(video, red) < 0.7  # nearer 0.79 than 0.5, far from both
    assert sanity.shape_fit(blob)["circle"] < sanity.SHAPE_FIT_MIN["circle"]
    r = sanity.score_video(video, red, circle)
    assert r["shape_ok"] and not r["shape_strict"], r


def test_strict_shape_score_passes_what_the_vae_draws_of_the_data(toy_models):
    """The strict score's thresholds are what the shipped VAE draws of true shapes (calibrated on
    seeds 9000-9089), so a DiT that generated exactly the data's latents would pass it: here on
    other clips (seeds 5000-5029) encoded and decoded through ComfyUI's VAE. (The fill-ratio
    score it replaced passed 60 % of these, so no DiT could have reached issue 5's 80 % on it.)"""
    from boxdirector.toyworld import sanity

    _nodes, _model, vae, _clip = toy_models
    truth = sanity.data_scores(30, seed0=5000, vae=vae)
    strict = sum(r["color_ok"] and r["shape_strict"] for r in truth) / len(truth)
    assert strict >= 0.85, strict
    assert sum(r["steady"] for r in truth) / len(truth) >= 0.9


def test_sanity_cli_takes_a_seed_range_and_counts_strict_shapes_per_shape(comfy, monkeypatch):
    """``python -m toyworld.sanity --seed0 S``: sample i is drawn from seed S + i (a held-out seed
    range for quoting a DiT chosen on seeds 1000+), and the strict score is also split by shape,
    the per-shape shares adding up to the overall one."""
    from boxdirector.toyworld import sanity

    seen, real = [], sanity.generate
    monkeypatch.setattr(sanity, "generate", lambda *a, seed, **k: seen.append(seed) or real(*a, seed=seed, **k))
    r = sanity.main(["--samples", "3", "--steps", "2", "--seed0", "2000"])
    assert seen == [2000, 2001, 2002]
    assert set(r["strict_by_shape"]) == {"circle"}  # the first five prompts are circles
    assert r["strict_by_shape"]["circle"] == r["strict"]
