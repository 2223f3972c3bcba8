"""Typed stub of edgetune._native (sparse training kernels, NHWC float32).

Activation codes: 0 none, 1 ReLU, 2 Clip(lo, hi) (ReLU6 = Clip(0, 6)), 3 hard-swish,
4 LeakyReLU(alpha), 5 Sigmoid; strings "none", "relu", "relu6"/"clip", "hardswish",
"leaky_relu", "sigmoid" are accepted too. Clip with lo != 0 is computed exactly but
treated as unconstrained (dense).
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Act = Union[int, str]

ACT_NONE: int
ACT_RELU: int
ACT_CLIP: int
ACT_RELU6: int
ACT_HSWISH: int
ACT_LEAKY: int
ACT_SIGMOID: int
ACT_INPUT: int

LEVEL: str  # the kernel module's build level: native (host-tuned build), baseline, avx2, avx512, neon
SIMD_ISA: str  # the instruction set the kernels' vectors are compiled for: avx512, avx2, avx, neon or baseline
VECTOR_FLOATS: int  # floats per vector at that ISA (16, 8 or 4)

def built_levels() -> list[str]: ...
def runnable_levels() -> list[str]: ...
def cpu_supports(level: str) -> bool: ...
def memory_stats() -> dict[str, int]: ...
def reset_memory_peak() -> None: ...
def num_threads() -> int:
    """Threads the kernels use (set_num_threads, else os_threads())."""
def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels use (their own pool; OpenMP for the ops that use it)."""
def set_kernel_policy(policy: str) -> None:
    """Which kernels the conv/gemm phases run: 'auto' (per layer and phase, by the operand's density),
    'tiled' (register-tiled micro-kernels) or 'walk' (element list walks where the operand is listed)."""
WALK_DENSITY: float  # a phase walks the lists of an operand less dense than this (auto policy)
def kernel_policy() -> str:
    """The kernel policy in force."""
def os_threads() -> int:
    """CPUs the OS lets this process run on (its affinity mask): the default thread count."""
def cache_sizes() -> dict:
    """{'l1d', 'l2', 'line', 'measured'}: the cache sizes the tiled kernels size their blocks from."""
def has_openmp() -> bool:
    """Whether the module was built with OpenMP."""
def release_cached_memory() -> int:
    """Free the idle large buffers kept for reuse between steps (at most 256 MiB); returns the bytes freed."""

class SparseInfo:
    """What FP keeps for BP/WG: compressed activation (mask/state bits + packed non-zeros) and the plan (lists, counts, zero structure)."""
    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """(N, H, W, C); gemm activations are (N, 1, 1, F)."""
    @property
    def act(self) -> int:
        """Activation code that produced it (-1 for analyze_input)."""
    @property
    def dense(self) -> bool:
        """True in dense-switch mode (lists are all indices)."""
    @property
    def constrained(self) -> bool:
        """True when the activation puts a zero constraint on a (ReLU, Clip(0,hi), hard-swish, input)."""
    @property
    def size(self) -> int:
        """Number of elements."""
    @property
    def nnz(self) -> int:
        """Non-zeros of a (|A|; all elements for unconstrained activations)."""
    @property
    def g_count(self) -> int:
        """|G|, positions where an error can pass."""
    @property
    def sparsity(self) -> float:
        """1 - nnz/size."""
    @property
    def g_sparsity(self) -> float:
        """1 - g_count/size."""
    def stored_bytes(self) -> int:
        """Bytes of the compressed storage kept for backward (state bits + one float per stored value)."""
    def dense_bytes(self) -> int:
        """Bytes of the same activation stored densely (size * 4)."""
    def plan_bytes(self) -> int:
        """Bytes of the plan (row pointers, index lists, counts, WG transposed lists)."""
    def decompress(self) -> F32:
        """Dense a, shape (N, H, W, C)."""
    def mask_a(self) -> npt.NDArray[np.bool_]:
        """A as the kernels use it (a != 0, or all True when unconstrained)."""
    def mask_g(self) -> npt.NDArray[np.bool_]:
        """G: positions where f'(z) may be non-zero."""
    def state(self) -> npt.NDArray[np.uint8]:
        """Per-element 1/2-bit state code (ReLU: 1=positive; Clip: 0 low, 1 linear, 2 high; hswish: 0 z<=-3, 1 curved, 2 z>=3)."""
    def pixel_lists(self) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """CSR (ptr[P+1], channel idx) of the non-zeros of a per pixel."""
    def g_lists(self) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """CSR (ptr[P+1], channel idx) of G per pixel."""
    def packed_values(self) -> F32:
        """The stored values, aligned with pixel_lists (dense when dense/unconstrained).

        These are the values of a, except for hard-swish, where an element in the
        curved region (state 1) holds z (a = z*(z+3)/6 is recomputed from it) and
        one in the identity region (state 2) holds a (= z). decompress() returns a."""
    def channel_counts(self) -> npt.NDArray[np.int64]:
        """|A| per channel."""
    def pixel_counts(self) -> Tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """(|A(p)|, |G(p)|) per pixel."""
    def zero_structure(self) -> dict:
        """{'measured', 'pixels', 'blocks', 'block_channels', 'zero_pixels_a', 'zero_pixels_g', 'zero_blocks_a',
        'zero_blocks_g'}: whole pixels and whole channel blocks (of block_channels = the vector width) with no
        element in A (_a) or outside G (_g), measured by the epilogue that made the activation."""
    def grad_z(self, grad_a: F32) -> F32:
        """d = grad_a * f'(z), dense, exactly zero outside G (torch derivative conventions)."""
    def flatten(self) -> "SparseInfo":
        """Same activation viewed as (N, 1, 1, H*W*C) (NHWC flatten order) for a following GemmLayer."""
    def with_mode(self, dense: bool) -> "SparseInfo":
        """Copy in dense-switch or sparse mode (self if already in that mode)."""

def analyze_input(x: F32, dense: bool = False, min_sparsity: float = 0.0) -> SparseInfo:
    """SparseInfo of a tensor with no known constraint (network input, pool/Add/BN output): the only place zeros are discovered.

    With min_sparsity > 0 a tensor with a smaller fraction of zeros is built in dense mode (no lists)."""
def activate(z: F32, act: Act, alpha: float = 0.01, lo: float = 0.0, hi: float = 6.0,
             dense: bool = False) -> Tuple[F32, SparseInfo]:
    """Fused activation of a pre-activation z (NHWC or (N, F)) -> (a, SparseInfo)."""

class _Layer:
    """What ConvLayer and GemmLayer share (a stub-only base: the module has no such class)."""
    def set_weights(self, W: F32, b: Optional[F32] = None) -> None:
        """Copy and pack W and bias (K,); call again after every optimizer update."""
    def forward(self, x: Union[F32, SparseInfo], dense: bool = False,
                want_a: bool = True, out_dense: bool = False,
                x_dense: Optional[F32] = None, keep_values: bool = True) -> Tuple[Optional[F32], SparseInfo]:
        """FP: x is the previous SparseInfo (or an array, analysed on the fly) -> (a or None, output info).

        out_dense builds the output info in dense mode (no lists) even in sparse mode; a dense-mode input
        info is iterated densely in sparse mode too. x_dense, the input's values as a dense NHWC array
        (held until the next forward), spares depthwise kernels the expansion of the lists. GemmLayer
        flattens a conv SparseInfo (N,H,W,C) in NHWC order."""
    def backward(self, grad_a: F32, need_input_grad: bool = True, prev_info: Optional[SparseInfo] = None,
                 mask_input_grad: bool = True,
                 need_weight_grad: bool = True) -> Tuple[Optional[F32], Optional[F32], Optional[F32]]:
        """BP+WG of the last forward -> (dL/da_in or None, dW or None, db or None); g_in masked by G of
        prev_info (default: the input info)."""
    def phase_ms(self) -> dict:
        """{'fp', 'bp', 'wg'}: wall ms of the last forward and backward (the d prologue is booked to bp when it runs)."""
    def kernels(self) -> dict:
        """{'fp', 'bp', 'wg'}: the kernel family each phase of the last call ran (tiled, walk, im2col, depthwise; '' if it did not run)."""
    def phase_cpu_ms(self) -> dict:
        """{'fp', 'bp', 'wg'}: CPU ms of the same phases, summed over the kernels' threads."""
    def counters(self, total: bool = False) -> dict:
        """{'fp'|'bp'|'wg': {'dense', 'required', 'executed'}} MACs of the last call (or cumulative)."""
    def release(self) -> None: ...  # drop what the last step kept (input/output infos)
    def reset_counters(self) -> None:
        """Zero the cumulative counters."""
    trainable: bool
    """If False, forward skips building the WG plan of its input."""
    @property
    def input_info(self) -> Optional[SparseInfo]:
        """Input info of the last forward (kept for WG; flattened for GemmLayer)."""
    @property
    def output_info(self) -> Optional[SparseInfo]:
        """Output info of the last forward."""

class ConvLayer(_Layer):
    """Sparse 2-D convolution + bias + fused activation on NHWC activations; weights OIHW (K, C/groups, R, S)."""
    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1),
                 stride: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                 dilation: Sequence[int] = (1, 1), groups: int = 1, act: Act = 0, alpha: float = 0.01,
                 lo: float = 0.0, hi: float = 6.0) -> None:
        """pads = (top, left, bottom, right) as in ONNX order (t, l, b, r)."""
    def out_shape(self, H: int, W: int, /) -> Tuple[int, int]:
        """Output (OH, OW) for an input of H x W."""
    @property
    def depthwise(self) -> bool:
        """groups == C == K (own kernel)."""

class GemmLayer(_Layer):
    """Sparse fully connected layer a = f(x W^T + b); x (N, in), W (out, in); a gemm info is (N, 1, 1, out)."""
    def __init__(self, in_features: int, out_features: int, act: Act = 0, alpha: float = 0.01,
                 lo: float = 0.0, hi: float = 6.0) -> None:
        """Gemm as a 1x1 conv on 1x1 images."""

def maxpool_forward(x: F32, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int] = (0, 0, 0, 0),
                    ceil_mode: bool = False) -> Tuple[F32, npt.NDArray[np.int32]]:
    """Max pool NHWC -> (y, argmax ih*W+iw of the first maximum)."""
def maxpool_backward(grad_y: F32, argmax: npt.NDArray[np.int32], in_shape: Sequence[int]) -> F32:
    """Route grad_y to the argmax positions -> grad_x (N, H, W, C)."""
def avgpool_forward(x: F32, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int] = (0, 0, 0, 0),
                    ceil_mode: bool = False, count_include_pad: bool = False) -> F32:
    """Average pool NHWC."""
def avgpool_backward(grad_y: F32, in_shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                     pads: Sequence[int] = (0, 0, 0, 0), ceil_mode: bool = False,
                     count_include_pad: bool = False) -> F32:
    """Backward of avgpool_forward."""
def global_avgpool_forward(x: F32) -> F32:
    """Mean over H and W: (N, H, W, C) -> (N, C)."""
def global_avgpool_backward(grad_y: F32, in_shape: Sequence[int]) -> F32:
    """Backward of global_avgpool_forward."""
def batchnorm_forward(x: F32, gamma: F32, beta: F32, mean: F32, var: F32, eps: float = 1e-5) -> F32:
    """Frozen-statistics BatchNorm over the last (channel) axis."""
def batchnorm_backward(grad_y: F32, x: F32, gamma: F32, mean: F32, var: F32,
                       eps: float = 1e-5) -> Tuple[F32, F32, F32]:
    """-> (grad_x, dgamma, dbeta) with frozen statistics."""
def add(a: F32, b: F32) -> F32:
    """Elementwise a + b (same shapes)."""
def softmax_cross_entropy(logits: F32, labels: npt.NDArray[np.int64]) -> Tuple[float, F32]:
    """Mean softmax cross-entropy over the batch -> (loss, dL/dlogits)."""

# native/ops/: channel gates and channel concatenation (channels-last)
def gate_mul_forward(x: F32, gate: F32) -> F32:
    """x (N,H,W,C) times a per-image, per-channel gate (N,1,1,C) or (N,C)."""
def gate_mul_backward(grad_y: F32, x: F32, gate: F32, need_x: bool = True,
                      need_gate: bool = True) -> Tuple[Optional[F32], Optional[F32]]:
    """Backward of gate_mul_forward -> (grad_x or None, grad_gate in the gate's shape or None)."""
def concat_channels(parts: Sequence[F32]) -> F32:
    """Concatenate channels-last arrays along the last axis."""
def split_channels(grad: F32, widths: Sequence[int]) -> list[F32]:
    """Split an array along the last axis into parts of the given widths (the backward of concat_channels)."""
