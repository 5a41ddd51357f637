"""A register-blocked multiply-add kernel for Numba, written in LLVM IR: the inner loop of
the ``blocked`` convolutions (``blocked.py``).

Numba's loops keep a running sum in memory or in one register; a convolution runs near the
core's peak only when a block of outputs (P pixels times OV vectors of 16 channels) stays in
registers while the sums run: per step P broadcasts of one input value each, OV vector loads
of the weights, P x OV fused multiply-adds. LLVM does not find that blocking in scalar code
(a generated 4 x 32 block of scalar sums ran at 9 GFLOP/s on one core here, spilled), so
the block is built here as vector IR (``<16 x float>``, ``llvm.fma``), allocas that LLVM
keeps in registers, one case per block size. CIFAR-10 quick's conv2 (32 -> 32, 5 x 5, 16 x
16), one image on one core: 134 GFLOP/s with 6 x 2 blocks, where BLAS runs im2col's product
at 90 and the im2col copy costs as much again. Machines without AVX-512 run the same IR in
two 8-wide halves (``PIXELS``: fewer pixels a block, so the sums still fit 16 registers).

Numba's cache keys the compiled loops by the file that defines them (``blocked.py``): after
editing this file, touch that one.
"""

from __future__ import annotations

from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils, config
from numba.extending import intrinsic

LANES = 16  # floats a vector: one AVX-512 register
VECTORS = 2  # vectors of outputs a block at most (32 channels)
_FEATURES = (
    config.CPU_FEATURES if config.CPU_FEATURES is not None else binding.get_host_cpu_features().flatten()
)
# pixels a block: P x VECTORS sums, VECTORS weights and a broadcast in the 32 vector registers
# (CIFAR-10 quick's conv2 and conv3, forward and backward: 8 x 2 best, 12 x 2 alike; 6 x 2,
# 10 x 2, 4 x 4, 6 x 4 and 16 x 1 up to 1.4x slower); with 16 registers (AVX2: each sum two
# halves) 2
PIXELS = 8 if "+avx512f" in _FEATURES else 2


@njit(inline="always")
def most_pixels(vectors: int) -> int:  # pragma: no cover - compiled where it is used
    """The pixels a block of ``vectors`` may take: as many sums as PIXELS x VECTORS (a block
    of one vector, 16 outputs, takes 16 pixels: each weight vector read serves twice the
    sums)."""
    return PIXELS * VECTORS // vectors


_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, LANES)
_I32 = ir.IntType(32)


def _splat(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    one = builder.insert_element(ir.Constant(_VEC, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(
        one, ir.Constant(_VEC, ir.Undefined), ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
    )


def _vector(builder: ir.IRBuilder, base: ir.Value, at: ir.Value) -> ir.Value:
    """A pointer to the 16 floats from ``base[at]`` (any alignment)."""
    return builder.bitcast(builder.gep(base, [at]), _VEC.as_pointer())


def _nest(builder: ir.IRBuilder, pixels: int, vectors: int, a, b, y, z, loops, ap, yp, init) -> None:
    """One block's sums: for every step of the three loops ``(count, a stride, b stride)``,
    sum[p][v] += a[p ap + offset_a] * b[16 v + offset_b : + 16]; started from zero (``init``
    0), from the vectors at z (1: the bias) or at y (2: summing on); stored at y[p yp + 16 v :
    + 16]. The pointers are at the block's origin."""
    intp = ap.type
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v16f32")
    sums = [[cgutils.alloca_once(builder, _VEC) for _ in range(vectors)] for _ in range(pixels)]
    lane = [ir.Constant(intp, v * LANES) for v in range(vectors)]
    out = [
        [builder.add(builder.mul(ir.Constant(intp, p), yp), lane[v]) for v in range(vectors)]
        for p in range(pixels)
    ]
    summing_on = builder.icmp_signed("==", init, ir.Constant(init.type, 2))
    from_bias = builder.icmp_signed("==", init, ir.Constant(init.type, 1))
    for p in range(pixels):
        for v in range(vectors):
            bias = builder.select(
                from_bias, builder.load(_vector(builder, z, lane[v]), align=4), ir.Constant(_VEC, None)
            )
            kept = builder.load(_vector(builder, y, out[p][v]), align=4)
            builder.store(builder.select(summing_on, kept, bias), sums[p][v])
    (n1, a1, b1), (n2, a2, b2), (n3, a3, b3) = loops
    with cgutils.for_range(builder, n1) as one:
        a_one, b_one = builder.mul(one.index, a1), builder.mul(one.index, b1)
        with cgutils.for_range(builder, n2) as two:
            a_two = builder.add(a_one, builder.mul(two.index, a2))
            b_two = builder.add(b_one, builder.mul(two.index, b2))
            with cgutils.for_range(builder, n3) as three:
                a_at = builder.add(a_two, builder.mul(three.index, a3))
                b_at = builder.add(b_two, builder.mul(three.index, b3))
                weights = [
                    builder.load(_vector(builder, b, builder.add(b_at, lane[v])), align=4)
                    for v in range(vectors)
                ]
                for p in range(pixels):
                    at = builder.add(a_at, builder.mul(ir.Constant(intp, p), ap))
                    broadcast = _splat(builder, builder.load(builder.gep(a, [at])))
                    for v in range(vectors):
                        total = builder.call(fma, [broadcast, weights[v], builder.load(sums[p][v])])
                        builder.store(total, sums[p][v])
    for p in range(pixels):
        for v in range(vectors):
            builder.store(builder.load(sums[p][v]), _vector(builder, y, out[p][v]), align=4)


@intrinsic
def fma_block(
    typingctx, pixels, vectors, a, a_at, b, b_at, y, y_at, z, z_at, loop1, loop2, loop3, ap, yp, init
):
    """fma_block(pixels, vectors, a, a_at, b, b_at, y, y_at, z, z_at, (n1, a1, b1), (n2, a2,
    b2), (n3, a3, b3), ap, yp, init): ``_nest`` over float32 arrays from the given offsets, a
    block of ``pixels`` (1 to ``most_pixels(vectors)``) by ``vectors`` (1 to VECTORS) sums."""
    loop = types.UniTuple(types.intp, 3)
    signature = types.void(
        types.intp, types.intp, a, types.intp, b, types.intp, y, types.intp, z, types.intp,
        loop, loop, loop, types.intp, types.intp, types.intp,
    )  # fmt: skip

    def codegen(context, builder, sig, args):
        pixels, vectors, a, a_at, b, b_at, y, y_at, z, z_at, *loops, ap, yp, init = args

        def base(index: int, at):
            return builder.gep(context.make_array(sig.args[index])(context, builder, args[index]).data, [at])

        bases = base(2, a_at), base(4, b_at), base(6, y_at), base(8, z_at)
        loops = [cgutils.unpack_tuple(builder, value, 3) for value in loops]
        done = builder.append_basic_block("block.done")
        choose = builder.switch(
            builder.add(builder.mul(pixels, ir.Constant(pixels.type, VECTORS)), vectors), done
        )
        for v in range(1, VECTORS + 1):
            for p in range(1, most_pixels(v) + 1):
                case = builder.append_basic_block(f"block.{p}x{v}")
                choose.add_case(ir.Constant(pixels.type, p * VECTORS + v), case)
                builder.position_at_end(case)
                _nest(builder, p, v, *bases, loops, ap, yp, init)
                builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return signature, codegen
