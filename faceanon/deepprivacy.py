"""A conditional GAN that replaces faces, after DeepPrivacy (Hukkelas, Mester, Lindseth 2019).

The generator is a U-Net. Its input is a square context crop around the face in which the
face box is blanked (so it never sees the face it replaces), the box mask, seven sparse
keypoints drawn as small Gaussian maps (eye centres, nose tip, mouth corners, jaw ends, from
dlib's 68 landmarks) and a latent noise vector that enters at the bottleneck. It paints a new
face that fits the pose and the surroundings; only the box is pasted back into the image.

The original DeepPrivacy weights are no longer downloadable, so faceanon trains its own on
lfw-singletons only (``faceanon train-gan``, see :mod:`faceanon.gan_training`) and ships the
EMA generator in ``faceanon/weights/``. The model card beside the weights says how they
were made.

torch is imported lazily by the method, so listing methods stays light.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from faceanon.detect import clip_box
from faceanon.landmarks import (
    KEYPOINT_NAMES,
    feather_mask,
    feature_blend_mask,
    keypoints_from_box,
    keypoints_from_landmarks,
    landmarks_or_none,
    paste_warped,
)
from faceanon.methods import Box, Method, MethodError

try:  # torch is the optional "gan" extra; the method says so when it is missing.
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None
    nn = None
    F = None

#: Default weights, shipped with the package.
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "deepprivacy64.pt"
#: Environment variable naming other weights when none are passed.
WEIGHTS_ENV = "FACEANON_DEEPPRIVACY_WEIGHTS"
#: Marks a faceanon DeepPrivacy checkpoint, so that a wrong ``.pt`` file is named as such.
WEIGHTS_FORMAT = "faceanon-deepprivacy"
#: The context crop is this many times the longer box side, centred on the box.
CONTEXT = 2.0
#: How a generated face is blended into its box (see :class:`DeepPrivacy`).
BLENDS = ("box", "features")
#: An edge of the box whose seam (:func:`faceanon.utility.edge_seam`) is above this after
#: the blend is blended again over :data:`SEAM_FEATHER` (``seam_limit``, ``None``: never).
SEAM_LIMIT = 2.0
#: The ramp of a box edge that showed a seam, as a share of the box's shorter side.
SEAM_FEATHER = 0.2
#: Pixels around the box that the seam check reads (its lines reach 2 px outside the box,
#: and its smoothing along the edge a few sigma further).
_SEAM_MARGIN = 12
#: Keypoint Gaussians have this standard deviation, in model pixels at 64x64; other
#: resolutions scale it, so a keypoint covers the same share of the face.
KEYPOINT_SIGMA = 1.2


class WeightsError(MethodError):
    """A weights file is missing, unreadable or not a faceanon DeepPrivacy checkpoint."""


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator from its state dict."""

    resolution: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 192)
    bottleneck: int = 192
    z_dim: int = 32
    keypoints: int = len(KEYPOINT_NAMES)


def _require_torch():
    if torch is None:
        raise MethodError(
            "deepprivacy needs torch; install the gan extra: pip install 'faceanon[gan]'"
        )


# --------------------------------------------------------------------------------------
# Geometry shared by training and inference: both must cut the context crop the same way.


def crop_matrix(box: Sequence[float], resolution: int, *, context: float = CONTEXT) -> np.ndarray:
    """``2x3`` matrix mapping image coordinates to the model's square context crop.

    The crop is centred on the box and its side is ``context`` times the longer box side, so
    a face fills the central half of the crop whatever the image size.
    """
    x, y, w, h = (float(v) for v in box)
    side = context * max(w, h, 1.0)
    scale = resolution / side
    cx, cy = x + w / 2.0, y + h / 2.0
    return np.array(
        [[scale, 0.0, resolution / 2.0 - scale * cx], [0.0, scale, resolution / 2.0 - scale * cy]],
        dtype=np.float64,
    )


def context_crop(
    image: np.ndarray,
    box: Sequence[float],
    resolution: int,
    *,
    context: float = CONTEXT,
    interpolation: int = cv2.INTER_LINEAR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the square context crop around ``box``: training and inference cut it alike.

    Returns
    -------
    crop : ndarray
        ``uint8`` ``(resolution, resolution, 3)``; beyond the image the border pixels repeat.
    matrix : ndarray
        The :func:`crop_matrix` used, image to crop coordinates.
    corners : ndarray
        float32 ``(2, 2)``: the box's top-left and bottom-right corners in the crop.
    """
    matrix = crop_matrix(box, resolution, context=context)
    crop = cv2.warpAffine(
        image,
        matrix,
        (resolution, resolution),
        flags=interpolation,
        borderMode=cv2.BORDER_REPLICATE,
    )
    x, y, w, h = box
    corners = transform_points(matrix, np.array([[x, y], [x + w, y + h]], np.float64))
    return crop, matrix, corners


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``2x3`` affine matrix to ``(n, 2)`` points."""
    points = np.asarray(points, dtype=np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def box_mask(box_in_crop: Sequence[float], resolution: int) -> np.ndarray:
    """float32 ``(resolution, resolution)`` mask of the box, rounded outwards.

    Rounding outwards means every pixel the face touches is blanked: the generator must
    never see a sliver of the face it replaces.
    """
    x0, y0, x1, y1 = box_in_crop
    mask = np.zeros((resolution, resolution), dtype=np.float32)
    # Half a pixel more on each side: warpAffine samples at pixel centres and bilinear
    # interpolation reaches one neighbour further.
    c0, r0 = max(int(math.floor(x0 - 0.5)), 0), max(int(math.floor(y0 - 0.5)), 0)
    c1 = min(int(math.ceil(x1 + 0.5)), resolution)
    r1 = min(int(math.ceil(y1 + 0.5)), resolution)
    if c1 > c0 and r1 > r0:
        mask[r0:r1, c0:c1] = 1.0
    return mask


def keypoint_maps(keypoints, resolution: int, *, sigma: float | None = None):
    """Gaussian maps ``(B, K, R, R)`` for keypoints ``(B, K, 2)`` given in model pixels.

    ``sigma`` defaults to :data:`KEYPOINT_SIGMA` scaled to ``resolution``. Points outside
    the crop give empty maps rather than a blob clamped to the border. The maps are made on
    the keypoints' device.
    """
    _require_torch()
    if sigma is None:
        sigma = KEYPOINT_SIGMA * resolution / 64
    keypoints = torch.as_tensor(keypoints, dtype=torch.float32)
    grid = torch.arange(resolution, dtype=torch.float32, device=keypoints.device) + 0.5
    dx = grid.view(1, 1, 1, -1) - keypoints[..., 0, None, None]
    dy = grid.view(1, 1, -1, 1) - keypoints[..., 1, None, None]
    maps = torch.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma))
    inside = (
        (keypoints[..., 0] >= 0)
        & (keypoints[..., 0] < resolution)
        & (keypoints[..., 1] >= 0)
        & (keypoints[..., 1] < resolution)
    )
    return maps * inside[..., None, None].float()


def generator_input(images, masks, keypoints, resolution: int):
    """The conditioning tensor: blanked crop (3), mask (1), keypoint maps (K).

    ``images`` are ``(B, 3, R, R)`` in ``[-1, 1]``, ``masks`` ``(B, 1, R, R)`` with 1 on the
    face box. The box is set to 0 (mid grey) before anything reaches the generator.
    """
    blanked = images * (1.0 - masks)
    return torch.cat([blanked, masks, keypoint_maps(keypoints, resolution)], dim=1)


# --------------------------------------------------------------------------------------
# Networks. Defined only when torch is importable.

if torch is not None:

    class PixelNorm(nn.Module):
        """Normalise each pixel's feature vector; DeepPrivacy's (and ProGAN's) stabiliser."""

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)

    def _block(c_in: int, c_out: int, *, stride: int = 1, norm: bool = True) -> nn.Sequential:
        layers = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
        if norm:
            layers.append(PixelNorm())
        return nn.Sequential(*layers)

    class Generator(nn.Module):
        """U-Net generator: conditioning ``(B, 4+K, R, R)`` and noise ``(B, z_dim)`` to RGB."""

        def __init__(self, config: GeneratorConfig = GeneratorConfig()):
            super().__init__()
            self.config = config
            ch = config.channels
            c_cond = 4 + config.keypoints
            # The two finest levels (full and half resolution) get one convolution each
            # instead of two, and no pixel norm on the way down: on the CPU they cost most
            # of the time, and the coarse levels carry the face structure.
            self.stem = _block(c_cond, ch[0], norm=False)
            self.down = nn.ModuleList(
                _block(ch[i], ch[i + 1], stride=2, norm=False)
                if i == 0
                else nn.Sequential(_block(ch[i], ch[i + 1], stride=2), _block(ch[i + 1], ch[i + 1]))
                for i in range(len(ch) - 1)
            )
            self.to_bottleneck = _block(ch[-1], config.bottleneck, stride=2)
            self.bottleneck_size = config.resolution // 2 ** len(ch)
            self.z_channels = 32
            self.from_z = nn.Linear(config.z_dim, self.z_channels * self.bottleneck_size**2)
            self.mix = _block(config.bottleneck + self.z_channels, config.bottleneck)
            # Decoder levels mirror the encoder; each sees its skip and the keypoint maps
            # again so that the pose steers every scale, not only the first layer.
            ups = []
            c_prev = config.bottleneck
            for i in reversed(range(len(ch))):
                c_in = c_prev + ch[i] + config.keypoints
                if i <= 1:
                    ups.append(_block(c_in, ch[i], norm=i > 0))
                else:
                    ups.append(nn.Sequential(_block(c_in, ch[i]), _block(ch[i], ch[i])))
                c_prev = ch[i]
            self.up = nn.ModuleList(ups)
            self.to_rgb = nn.Conv2d(ch[0], 3, 1)

        def forward(self, cond, z):
            keypoints = cond[:, 4:]
            skips = []
            x = self.stem(cond)
            skips.append(x)
            for layer in self.down:
                x = layer(x)
                skips.append(x)
            x = self.to_bottleneck(x)
            zmap = self.from_z(z).view(
                -1, self.z_channels, self.bottleneck_size, self.bottleneck_size
            )
            x = self.mix(torch.cat([x, zmap], dim=1))
            for layer, skip in zip(self.up, reversed(skips), strict=True):
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
                kp = F.adaptive_max_pool2d(keypoints, skip.shape[-2:])
                x = layer(torch.cat([x, skip, kp], dim=1))
            return torch.tanh(self.to_rgb(x))

    class Discriminator(nn.Module):
        """Small conditional discriminator over image, mask and keypoint maps.

        ``channels`` are the widths of the levels; each level after the first halves the
        resolution, and a linear head reads the last one.
        """

        def __init__(
            self,
            config: GeneratorConfig = GeneratorConfig(),
            *,
            channels: Sequence[int] = (32, 64, 128, 256, 256),
        ):
            super().__init__()
            c_in = 4 + config.keypoints
            ch = tuple(channels)
            layers = [_block(c_in, ch[0], norm=False)]
            for i in range(len(ch) - 1):
                layers.append(_block(ch[i], ch[i + 1], stride=2, norm=False))
            self.features = nn.Sequential(*layers)
            side = config.resolution // 2 ** (len(ch) - 1)
            self.head = nn.Linear(ch[-1] * side * side, 1)

        def forward(self, images, cond):
            x = torch.cat([images, cond[:, 3:]], dim=1)
            return self.head(self.features(x).flatten(1)).squeeze(1)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------
# Weights files.


def save_generator(path, generator, *, metadata: dict | None = None, half: bool = True) -> None:
    """Write a generator's state dict and config, fp16 by default, through a temporary file.

    Tensors are moved to the CPU first, so weights trained on a GPU load anywhere.
    """
    path = Path(path)
    state = {
        name: (t.detach().half() if half and t.is_floating_point() else t.detach()).cpu().clone()
        for name, t in generator.state_dict().items()
    }
    config = asdict(generator.config)
    config["channels"] = list(config["channels"])
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": 1,
        "config": config,
        "state_dict": state,
        "metadata": metadata or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_generator(path) -> Generator:
    """Load a generator written by :func:`save_generator` for inference (eval mode, fp32).

    Raises
    ------
    WeightsError
        When the file is missing, truncated or corrupt, or holds something else.
    """
    _require_torch()
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"deepprivacy weights not found: {path} (train them with `faceanon train-gan`, "
            "or pass --weights PATH)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    # torch raises many types for a bad file (RuntimeError, UnpicklingError, EOFError,
    # BadZipFile...); all mean the same to the user.
    except Exception as error:
        raise WeightsError(
            f"deepprivacy weights unreadable: {path} is corrupt or not a torch file ({error})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path}: not a faceanon deepprivacy weights file")
    try:
        raw = dict(payload["config"])
        raw["channels"] = tuple(raw["channels"])
        generator = Generator(GeneratorConfig(**raw))
        generator.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    except (KeyError, TypeError, RuntimeError) as error:
        raise WeightsError(f"{path}: weights do not match the generator ({error})") from None
    generator.eval()
    return generator


# --------------------------------------------------------------------------------------
# The method.


def edge_ramps(height: int, width: int, ramps: Mapping[str, float]) -> np.ndarray:
    """A float32 ``(height, width)`` mask like :func:`~faceanon.landmarks.feather_mask`,
    with its own ramp width per edge (``top``, ``bottom``, ``left``, ``right``: shares of
    the shorter side). Equal widths give :func:`~faceanon.landmarks.feather_mask` exactly.
    """
    side = min(height, width)
    top, bottom, left, right = (max(1.0, ramps[e] * side)
                                for e in ("top", "bottom", "left", "right"))
    ys = np.arange(height, dtype=np.float32) + 0.5
    xs = np.arange(width, dtype=np.float32) + 0.5
    dy = np.minimum(ys / np.float32(top), (height - ys) / np.float32(bottom))
    dx = np.minimum(xs / np.float32(left), (width - xs) / np.float32(right))
    return np.clip(np.minimum(dy[:, None], dx[None, :]), 0.0, 1.0).astype(np.float32)


def seamed_edges(before: np.ndarray, after: np.ndarray, box: Box, *, limit: float) -> list[str]:
    """The edges of ``box`` whose seam in ``after`` against ``before`` is above ``limit``.

    :func:`faceanon.utility.edge_seam` on a crop :data:`_SEAM_MARGIN` pixels around the
    box (what it reads), so a large photograph costs no more than its face.
    """
    from faceanon.utility import edge_seam

    x, y, w, h = box
    rows, cols = before.shape[:2]
    x0, y0 = max(x - _SEAM_MARGIN, 0), max(y - _SEAM_MARGIN, 0)
    x1, y1 = min(x + w + _SEAM_MARGIN, cols), min(y + h + _SEAM_MARGIN, rows)
    # An edge on the crop's border is on the image's: edge_seam leaves both out.
    seams = edge_seam(before[y0:y1, x0:x1], after[y0:y1, x0:x1], (x - x0, y - y0, w, h))
    return [edge for edge, value in seams.items() if math.isfinite(value) and value > limit]


class DeepPrivacy(Method):
    """Replace each face with one a conditional GAN paints from the surroundings and pose.

    Parameters
    ----------
    weights
        A checkpoint written by ``faceanon train-gan``; default the shipped
        ``faceanon/weights/deepprivacy64.pt``.
    blend
        ``"box"`` (default): a ramp of ``feather`` all round the box. ``"features"``: a
        wider ramp (``outer_feather``) except on the face's features (from the landmarks),
        where it is ``feather`` (:func:`faceanon.landmarks.feature_blend_mask`): more of
        the photo survives around the face (higher SSIM and PSNR), at a small cost in
        privacy, and the box-edge seam is not reduced (see Notes).
    feather
        Width of the narrow blend ramp inside the box, as a share of its shorter side; 0
        pastes a hard-edged box. Every ramp lies inside the box, so pixels outside never
        change.
    outer_feather
        Width of the wide ramp away from the features (``blend="features"``).
    seam_limit
        After the blend, each box edge whose seam (:func:`faceanon.utility.edge_seam`,
        the new straight edge against the photo's) is above this is blended again with a
        ramp of ``seam_feather`` on that edge only; ``None`` never does. Default
        :data:`SEAM_LIMIT`.
    seam_feather
        That wider ramp, as a share of the box's shorter side (default
        :data:`SEAM_FEATHER`; a value below ``feather`` leaves the edge as it was).
    threads
        torch CPU threads, set when the model loads (``None`` leaves torch's setting). One
        thread runs a 64x64 face in about 40 ms; more threads only contend with the
        benchmark's parallel workers (0.6 s per face was measured with torch's default on
        two busy cores).

    Notes
    -----
    The blends were measured on LFW benchmark faces with ``benchmarks/gan_seam.py`` (the
    box-edge seam, :func:`faceanon.utility.edge_seam`) and ``benchmarks/gan_compare.py``
    (privacy and utility); the model card has the numbers. Only a wide ramp all round
    reduced the seam, and it let the recognizer find three times as many faces, so the
    default stays the narrow box ramp.

    Without ``weights`` the environment variable ``FACEANON_DEEPPRIVACY_WEIGHTS`` names the
    checkpoint if set, so commands that build the method by name can use other weights.
    """

    name = "deepprivacy"
    k_meaning = "not used: the face is always replaced by a generated one"
    k_range = None
    neutral_k = None
    stronger = "none"

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        blend: str = "box",
        feather: float = 0.12,
        outer_feather: float = 0.25,
        seam_limit: float | None = SEAM_LIMIT,
        seam_feather: float = SEAM_FEATHER,
        threads: int | None = 1,
    ):
        _require_torch()
        if blend not in BLENDS:
            raise MethodError(
                f"deepprivacy: blend must be one of {', '.join(BLENDS)}, got {blend!r}"
            )
        if not 0 <= feather <= 0.5 or (blend == "features" and not feather <= outer_feather <= 0.5):
            raise MethodError(
                "deepprivacy: need 0 <= feather <= 0.5, and feather <= outer_feather <= 0.5 "
                f"for the feature blend; got feather={feather}, outer_feather={outer_feather}"
            )
        if weights is None:
            weights = os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS
        self.weights = Path(weights)
        self.blend = blend
        self.feather = float(feather)
        self.outer_feather = float(outer_feather)
        if seam_limit is not None and not seam_limit > 0:
            raise MethodError(f"deepprivacy: seam_limit must be positive or None, got {seam_limit}")
        self.seam_limit = None if seam_limit is None else float(seam_limit)
        if not 0 <= seam_feather <= 0.5:
            raise MethodError(f"deepprivacy: need 0 <= seam_feather <= 0.5, got {seam_feather}")
        self.seam_feather = float(seam_feather)
        self.threads = threads
        self._generator = None

    @property
    def generator(self):
        """The generator, loaded on first use and then kept."""
        if self._generator is None:
            if self.threads is not None:
                torch.set_num_threads(int(self.threads))
            self._generator = load_generator(self.weights)
        return self._generator

    def describe(self) -> dict:
        info = super().describe()
        info["weights"] = str(self.weights)
        info["blend"] = self.blend
        info["seam_limit"] = self.seam_limit
        info["seam_feather"] = self.seam_feather
        if self.weights.is_file():
            info["weights_sha256"] = hashlib.sha256(self.weights.read_bytes()).hexdigest()
        return info

    def anonymize(
        self,
        image: np.ndarray,
        boxes: Sequence[Box],
        *,
        k: int | None = None,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Return a copy of ``image`` with every face box replaced by a generated face.

        The noise for each face is drawn from ``rng``, so a seed gives the same faces.
        """
        self.check_k(k)
        out = np.array(image, dtype=np.uint8, copy=True)
        generator = self.generator
        resolution = generator.config.resolution
        for raw_box in boxes:
            box = clip_box(raw_box, image.shape)
            if box is None:
                continue
            z = rng.standard_normal(generator.config.z_dim).astype(np.float32)
            self._replace(out, image, box, z, generator, resolution)
        return out

    def _replace(self, out, image, box, z, generator, resolution) -> None:
        x, y, w, h = box
        # Landmarks come from the untouched image: they only steer pose and the blend, and
        # the face itself is blanked before the generator sees anything.
        points = landmarks_or_none(image, box)
        keypoints = keypoints_from_box(box) if points is None else keypoints_from_landmarks(points)
        scale = crop_matrix(box, resolution)[0, 0]
        # Shrinking a large face with bilinear sampling aliases; blur to the target scale first.
        source = image
        if scale < 0.5:
            sigma = 0.5 / scale
            source = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
        crop, matrix, corners = context_crop(source, box, resolution)
        mask = box_mask(corners.ravel(), resolution)
        kp = transform_points(matrix, keypoints)

        with torch.no_grad():
            images = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            masks = torch.from_numpy(mask)[None, None]
            cond = generator_input(images, masks, torch.from_numpy(kp)[None], resolution)
            fake = generator(cond, torch.from_numpy(z)[None])[0]
        generated = ((fake.permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255)

        # Warp the crop back onto the box only: sample the generated crop at each box pixel.
        if self.blend == "features":
            alpha = feature_blend_mask(
                points, box, feather=self.feather, outer_feather=self.outer_feather
            )
        else:
            alpha = feather_mask(h, w, border=self.feather) if self.feather > 0 else 1.0
        before = out[y : y + h, x : x + w].copy()
        paste_warped(out, generated, matrix, box, alpha=alpha, interpolation=cv2.INTER_CUBIC)
        if self.seam_limit is None:
            return
        # The generator often paints a straight edge of its own along the box (a face
        # outline, a colour step) where the photo has none: widen the ramp on those edges
        # only, so the face stays replaced as by the narrow ramp everywhere else.
        seamed = seamed_edges(image, out, box, limit=self.seam_limit)
        if seamed:
            wide = max(self.feather, self.seam_feather)  # a seamed edge never gets narrower
            ramps = {e: wide if e in seamed else self.feather
                     for e in ("top", "bottom", "left", "right")}
            out[y : y + h, x : x + w] = before
            widened = np.minimum(alpha, edge_ramps(h, w, ramps))
            paste_warped(out, generated, matrix, box, alpha=widened,
                         interpolation=cv2.INTER_CUBIC)
