import pytest
import torch

from student.lowfreq import downsample, lowfreq_crop, lowfreq_pad, reduce_batch


def _band_limited(shape: tuple[int, ...], b: int, seed: int = 0) -> torch.Tensor:
    """Real images whose spectrum lies strictly inside the centred b x b band.

    Frequencies |k| <= (b - 1) // 2 on both axes: the set is symmetric, so the image stays real,
    and for even b it leaves out the band's unpaired -b/2 row and column.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    spec = torch.fft.fft2(x)
    h, w = shape[-2:]
    ky = torch.fft.fftfreq(h, 1 / h).abs()[:, None]
    kx = torch.fft.fftfreq(w, 1 / w).abs()[None, :]
    keep = (ky <= (b - 1) // 2) & (kx <= (b - 1) // 2)
    return torch.fft.ifft2(spec * keep).real


@pytest.mark.parametrize("size,b", [(32, 16), (32, 14), (33, 15), (24, 9), (64, 28)])
def test_band_limited_image_survives_crop_and_zero_padded_inverse(size, b):
    x = _band_limited((2, 3, size, size), b)
    y = lowfreq_crop(x, b)
    assert y.shape == (2, 3, b, b) and y.dtype == x.dtype
    back = lowfreq_pad(y, size, size)
    assert torch.allclose(back, x, atol=1e-10), (back - x).abs().max()


def test_float32_round_trip_within_float_tolerance():
    x = _band_limited((4, 3, 32, 32), 12).float()
    assert torch.allclose(lowfreq_pad(lowfreq_crop(x, 12), 32, 32), x, atol=1e-5)


def test_output_size_dtype_and_mean_kept():
    x = torch.randn(5, 3, 40, 40)
    y = lowfreq_crop(x, 18)
    assert y.shape == (5, 3, 18, 18) and y.dtype == torch.float32
    # the zero frequency is kept and rescaled by (b/H)(b/W): every channel keeps its mean
    assert torch.allclose(y.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-5)
    assert lowfreq_crop(x, 40) is x  # the full band is the image itself
    assert downsample(x, 18).shape == (5, 3, 18, 18)


def test_energy_parseval():
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    spec = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    total = spec.abs().pow(2).sum(dim=(-2, -1))
    # Parseval: sum |x|^2 = sum |X|^2 / (H W)
    assert torch.allclose(x.pow(2).sum(dim=(-2, -1)), total / (32 * 32))
    for b in (8, 15, 16, 31):
        s = 16 - b // 2
        band = spec[..., s : s + b, s : s + b].abs().pow(2).sum(dim=(-2, -1))
        assert (band <= total + 1e-9).all()
        y = lowfreq_crop(x, b)
        # mean power of the output is the band's energy share: never above the input's
        assert (y.pow(2).mean(dim=(-2, -1)) <= x.pow(2).mean(dim=(-2, -1)) + 1e-12).all()
        assert (y.pow(2).mean(dim=(-2, -1)) <= band / (32 * 32) ** 2 + 1e-12).all()


def test_energy_of_band_limited_image_is_kept_exactly():
    x = _band_limited((2, 3, 32, 32), 16)
    y = lowfreq_crop(x, 16)
    assert torch.allclose(y.pow(2).mean(dim=(-2, -1)), x.pow(2).mean(dim=(-2, -1)))


def test_batched_equals_per_image():
    x = torch.randn(6, 3, 32, 32)
    for fn in (lowfreq_crop, downsample):
        batched = fn(x, 20)
        single = torch.cat([fn(x[i : i + 1], 20) for i in range(len(x))])
        assert torch.allclose(batched, single, atol=1e-6)


def test_constant_image_stays_constant():
    x = torch.full((1, 3, 32, 32), 0.7)
    assert torch.allclose(lowfreq_crop(x, 13), torch.full((1, 3, 13, 13), 0.7), atol=1e-6)
    assert torch.allclose(downsample(x, 13), torch.full((1, 3, 13, 13), 0.7), atol=1e-6)


def test_bad_inputs_are_clear_errors():
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="bandwidth"):
        lowfreq_crop(x, 17)
    with pytest.raises(ValueError, match="bandwidth"):
        downsample(x, 0)
    with pytest.raises(ValueError, match="float"):
        lowfreq_crop(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 8)
    with pytest.raises(ValueError, match="mode"):
        reduce_batch(x, 8, "nearest")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_path_equals_cpu_path():
    x = torch.randn(8, 3, 64, 64)
    for mode in ("crop", "downsample"):
        cpu = reduce_batch(x, 28, mode)
        gpu = reduce_batch(x.cuda(), 28, mode)
        assert gpu.device.type == "cuda"
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
