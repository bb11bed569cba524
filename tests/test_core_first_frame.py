"""core.first_frame against dense references (explicit N x N masks: test-only, tiny N), fp32."""

import math

import pytest
import torch

pytestmark = pytest.mark.core

from boxdirector.core import first_frame as ff  # noqa: E402


def dense_ref(q, k, v, frames, n, mode, strength, key_mask=None, text_bias=None, base=None):
    """q/k/v [B, H, L, D]; the rule as an explicit [Lq, Lk] allow mask + bias.
    text_bias: [n, E] additive bias of video queries on the extra keys."""
    B, H, L, D = q.shape
    Lk = k.shape[2]
    S = n // frames
    fr_q = torch.full((L,), -1)
    fr_q[:n] = torch.arange(n) // S
    fr_k = torch.full((Lk,), -1)
    fr_k[:n] = torch.arange(n) // S
    allow = torch.ones(L, Lk, dtype=torch.bool)
    bias = torch.zeros(L, Lk)
    vq, vk = fr_q[:, None] >= 0, fr_k[None, :] >= 0
    if mode == "paper":
        allow = ~(vq & vk) | (fr_k[None, :] == 0)
    elif mode == "anchor":
        allow = ~(vq & vk) | (fr_k[None, :] == 0) | (fr_k[None, :] == fr_q[:, None])
        sel = vq & (fr_k[None, :] == 0) & (fr_q[:, None] > 0)
        bias = bias + torch.where(sel, math.log(strength) if strength > 0 else float("-inf"), 0.0)
    elif mode == "add_first":   # full attention; frame 0 counts 1 + strength times for frames >= 1
        sel = vq & (fr_k[None, :] == 0) & (fr_q[:, None] > 0)
        bias = bias + torch.where(sel, math.log(1 + strength), 0.0)
    if text_bias is not None:
        bias[:n, n:] += text_bias
    scores = q @ k.transpose(-1, -2) / math.sqrt(D) + bias
    if key_mask is not None:
        scores = scores + key_mask.reshape(key_mask.shape[0], 1, 1, Lk)
    scores = scores.masked_fill(~allow, float("-inf"))
    out = scores.softmax(-1) @ v
    if mode == "paper" and strength < 1:
        out[:, :, :n] = strength * out[:, :, :n] + (1 - strength) * base[:, :, :n]
    return out


def rand(*shape, g):
    return torch.randn(*shape, generator=g)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", ["add_first", "paper", "anchor", "full"])
def test_video_only_matches_dense(seed, mode):
    g = torch.Generator().manual_seed(seed)
    B = [1, 2, 3][seed % 3]
    H = [1, 3, 5][seed % 3]                         # odd heads
    T = [1, 2, 4, 5][seed % 4]
    S = [3, 7, 12][seed % 3]
    D = [4, 8][seed % 2]
    n = T * S
    q, k, v = (rand(B, H, n, D, g=g) for _ in range(3))
    strength = [1.0, 0.5, 2.0, 0.0][seed % 4] if mode != "full" else 1.0
    base = rand(B, H, n, D, g=g)
    got = ff.first_frame_attention(q, k, v, T, mode, strength, base=base)
    ref = dense_ref(q, k, v, T, n, mode, strength, base=base)
    assert (got - ref).abs().max() < 1e-5


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["add_first", "paper", "anchor", "full"])
def test_joint_text_key_mask_and_groups_match_dense(seed, mode):
    g = torch.Generator().manual_seed(100 + seed)
    B, H, T, S, D, E = 2, 3, [2, 3, 4, 1][seed], 6, 8, 5
    n = T * S
    L = n + E
    q, k, v = (rand(B, H, L, D, g=g) for _ in range(3))
    key_mask = torch.zeros(B if seed % 2 else 1, 1, L)
    key_mask[..., -2:] = float("-inf")            # text padding, as HunyuanVideo passes it
    if seed == 2:
        key_mask = None                           # no padding: groups without any bias must still work
    labels = torch.randint(0, 3, (n,), generator=g)
    subjects = [[0, 1], [2]]
    groups = ff.label_groups(labels, subjects, E, 1.5)
    text_bias = ff.subject_bias(labels, subjects, E, 1.5)
    strength = 0.7
    base = rand(B, H, L, D, g=g)
    got = ff.first_frame_attention(q, k, v, T, mode, strength, n_video=n, key_mask=key_mask, groups=groups, base=base)
    ref = dense_ref(q, k, v, T, n, mode, strength, key_mask=key_mask, text_bias=text_bias, base=base)
    assert (got - ref).abs().max() < 1e-5
    # boolean key masks are the same rule
    if key_mask is not None:
        got_b = ff.first_frame_attention(q, k, v, T, mode, strength, n_video=n, key_mask=key_mask == 0,
                                         groups=groups, base=base)
        assert (got_b - ref).abs().max() < 1e-5


def test_bnc_layout_equals_bhld_and_cfg_chunks_are_independent():
    g = torch.Generator().manual_seed(7)
    B, H, T, S, D = 2, 3, 4, 5, 8   # B = 2: a cond and an uncond chunk
    q, k, v = (rand(B, T * S, H * D, g=g) for _ in range(3))
    got = ff.first_frame_attention_bnc(q, k, v, H, T, "anchor", 1.3)
    to4 = lambda x: x.view(B, -1, H, D).transpose(1, 2)  # noqa: E731
    ref = dense_ref(to4(q), to4(k), to4(v), T, T * S, "anchor", 1.3).transpose(1, 2).reshape(B, T * S, H * D)
    assert (got - ref).abs().max() < 1e-5
    one = ff.first_frame_attention_bnc(q[1:], k[1:], v[1:], H, T, "anchor", 1.3)
    assert (got[1:] - one).abs().max() < 1e-6


@pytest.mark.parametrize("mode", ["add_first", "anchor", "paper"])
def test_later_frames_attend_each_other_only_in_add_first(mode):
    """Issue 28: the paper keeps temporal attention and *adds* frame 0's K/V. A frame-2 query must
    depend on frame-1 keys (anchor / paper cut that path); add_first at strength 1 is full attention
    with frame 0's K/V appended once more for frames >= 1 (Eq. 5's [K_i, K_1] on top of full
    attention), written here literally by concatenation."""
    g = torch.Generator().manual_seed(5)
    B, H, T, S, D = 1, 2, 4, 3, 8
    q, k, v = (rand(B, H, T * S, D, g=g) for _ in range(3))
    k2 = k.clone()
    k2[:, :, S:2 * S] += 3 * rand(B, H, S, D, g=g)          # frame 1's keys only
    f2 = slice(2 * S, 3 * S)
    a = ff.first_frame_attention(q, k, v, T, mode, 1.0)[:, :, f2]
    b = ff.first_frame_attention(q, k2, v, T, mode, 1.0)[:, :, f2]
    moved = (a - b).abs().max().item()
    if mode != "add_first":
        assert moved == 0.0
        return
    assert moved > 1e-2
    got = ff.first_frame_attention(q, k, v, T, "add_first", 1.0)
    kk, vv = torch.cat([k, k[:, :, :S]], 2), torch.cat([v, v[:, :, :S]], 2)
    appended = torch.nn.functional.scaled_dot_product_attention(q[:, :, S:], kk, vv)
    plain = torch.nn.functional.scaled_dot_product_attention(q[:, :, :S], k, v)
    assert (got[:, :, S:] - appended).abs().max() < 1e-5
    assert (got[:, :, :S] - plain).abs().max() < 1e-5
    assert (ff.first_frame_attention(q, k, v, T, "add_first", 0.0)
            - torch.nn.functional.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-5


@pytest.mark.parametrize("joint", [False, True])
def test_add_first_under_a_region_plan_matches_dense(joint):
    """The region rule's own plan (each token sees its region in every frame; text keys as the plan
    says) with the frame-0 bias on later frames' queries, per batch item (0 = rule off there)."""
    from boxdirector.core import region_attention as ra

    g = torch.Generator().manual_seed(9)
    B, H, T, S, D = 2, 2, 3, 6, 8
    n = T * S
    E = 4 if joint else 0
    L = n + E
    q, k, v = (rand(B, H, L, D, g=g) for _ in range(3))
    labels = torch.randint(0, 3, (n,), generator=g)
    labels[:S][:3] = torch.tensor([0, 1, 2])              # every label in frame 0 too
    if joint:
        plan = ra.joint_attention_plan(labels, [[0], [1, 2]], E)
        allow_txt = torch.zeros(L, E, dtype=torch.bool)   # dense: fg sees its words, bg the rest, text all
        for i in range(n):
            lab = int(labels[i])
            allow_txt[i] = torch.tensor([j in ([0], [1, 2])[lab - 1] if lab else j == 3 for j in range(E)])
        allow_txt[n:] = True
    else:
        plan = ra.self_attention_plan(labels)
    lab = torch.cat([labels, torch.full((E,), -1)])
    fr = torch.cat([torch.arange(n) // S, torch.full((E,), -1)])
    allow = (lab[:, None] == lab[None, :]) & (fr[:, None] >= 0) & (fr[None, :] >= 0)
    if joint:
        allow[:, n:] = allow_txt
        allow[n:, :] = True        # text queries: as the joint plan's (checked against it below)
    strengths = [1.5, 0.0]
    bias = torch.zeros(B, 1, L, L)
    for b, s in enumerate(strengths):
        bias[b, 0, (fr >= 1)[:, None] & (fr == 0)[None, :]] = math.log1p(s)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(D) + bias).masked_fill(~allow, float("-inf"))
    ref = scores.softmax(-1) @ v
    split = ff.first_frame_split(plan, L, S, n)
    bsplit = tuple((rows, ra.batch_plan([p, p], [1, 1])) for rows, p in split)
    got = ff.add_first_attention(q, k, v, bsplit, [math.log1p(s) for s in strengths], S)
    if joint:   # text queries follow the region plan itself
        ref[:, :, n:] = ra.masked_attention(q, k, v, plan)[:, :, n:]
    assert (got - ref).abs().max() < 1e-5
    # [B, L, H*D] layout
    to3 = lambda x: x.transpose(1, 2).reshape(B, L, -1)  # noqa: E731
    got3 = ff.add_first_attention(to3(q), to3(k), to3(v), bsplit, [math.log1p(s) for s in strengths], S, heads=H)
    assert (got3 - to3(ref)).abs().max() < 1e-5


def test_anchor_strength_edges():
    g = torch.Generator().manual_seed(3)
    B, H, T, S, D = 1, 2, 3, 4, 8
    q, k, v = (rand(B, H, T * S, D, g=g) for _ in range(3))
    # strength 0: own frame only (block-diagonal per frame)
    got = ff.first_frame_attention(q, k, v, T, "anchor", 0.0)
    for f in range(T):
        sl = slice(f * S, (f + 1) * S)
        own = torch.nn.functional.scaled_dot_product_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl])
        assert (got[:, :, sl] - own).abs().max() < 1e-5
    # paper: every frame attends frame 0 only
    got = ff.first_frame_attention(q, k, v, T, "paper", 1.0)
    first = torch.nn.functional.scaled_dot_product_attention(q, k[:, :, :S], v[:, :, :S])
    assert (got - first).abs().max() < 1e-5


def test_subject_bias_cross_attention_matches_dense():
    g = torch.Generator().manual_seed(11)
    B, H, N, T, D = 2, 3, 20, 8, 8
    q = rand(B, H, N, D, g=g)
    k, v = rand(B, H, T, D, g=g), rand(B, H, T, D, g=g)
    labels = torch.randint(0, 3, (N,), generator=g)
    bm = ff.subject_bias(labels, [[1, 2], [5]], T, 2.0)
    assert bm.shape == (N, T)
    assert bm[labels == 1][:, [1, 2]].eq(2.0).all() and bm[labels == 1][:, [0, 3, 4, 5, 6, 7]].eq(0).all()
    assert bm[labels == 0].eq(0).all()
    key_mask = torch.zeros(B, 1, T)
    key_mask[0, :, -3:] = -1e4
    got = ff.biased_cross_attention(q, k, v, bm, key_mask=key_mask)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D) + bm + key_mask[:, :, None, :]
    ref = scores.softmax(-1) @ v
    assert (got - ref).abs().max() < 1e-5


def test_errors_name_the_problem():
    q = torch.zeros(1, 1, 10, 4)
    with pytest.raises(ValueError, match="equal frames"):
        ff.first_frame_attention(q, q, q, 3)
    with pytest.raises(ValueError, match="mode"):
        ff.first_frame_attention(q, q, q, 2, "bogus")
    with pytest.raises(ValueError, match="base"):
        ff.first_frame_attention(q, q, q, 2, "paper", 0.5)
    with pytest.raises(ValueError, match="per key"):
        ff.first_frame_attention(q, q, q, 2, key_mask=torch.zeros(1, 10, 10))


def test_shared_noise_statistics_and_forms():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4, 16, 6, 32, 32, generator=g)
    out = ff.shared_noise(noise, 0.2, "preserve")
    assert torch.equal(out[:, :, 0], noise[:, :, 0])
    later = out[:, :, 1:]
    assert abs(later.std().item() - 1.0) < 0.01 and abs(later.mean().item()) < 0.01
    # correlation with frame 0: alpha (0.2) for the preserving form
    corr = (later * out[:, :, :1]).mean().item()
    assert abs(corr - 0.2) < 0.01
    paper = ff.shared_noise(noise, 0.2, "paper")
    assert abs(paper[:, :, 1:].std().item() - math.sqrt(0.04 + 0.64)) < 0.01
    assert torch.allclose(paper[:, :, 3], 0.2 * noise[:, :, 0] + 0.8 * noise[:, :, 3])
    assert torch.equal(ff.shared_noise(noise, 0.0), noise)
    # Eq. 8: the encoded first frame E(v1) is the shared term (oracle: the formula)
    first = 0.5 + 0.8 * torch.randn(4, 16, 1, 32, 32, generator=g)
    eq8 = ff.shared_noise(noise, 0.2, "paper", first=first)
    assert torch.equal(eq8[:, :, 0], noise[:, :, 0])
    assert torch.allclose(eq8[:, :, 1:], 0.2 * first + 0.8 * noise[:, :, 1:], atol=1e-6)
    kept = ff.shared_noise(noise, 0.2, "preserve", first=first[:, :, 0])   # [B, C, H, W] works too
    m2 = first.pow(2).mean(dim=(1, 2, 3, 4), keepdim=True)
    assert torch.allclose(kept[:, :, 1:], 0.2 * first + (1 - 0.04 * m2).sqrt() * noise[:, :, 1:], atol=1e-6)
    assert abs(kept[:, :, 1:].pow(2).mean().item() - 1.0) < 0.02                 # unit second moment
    with pytest.raises(ValueError, match="first_frame"):
        ff.shared_noise(noise, 0.2, first=torch.zeros(4, 16, 1, 16, 16))
    with pytest.raises(ValueError, match="alpha"):
        ff.shared_noise(noise, 1.5)
