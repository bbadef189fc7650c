"""A small TFLite -> ONNX converter for the operators of MediaPipe's BlazeFace models (used by
``convert_blazeface.py``; needs the ``tflite`` flatbuffer package, ``onnx`` and numpy).

The ONNX graph is NCHW with a dynamic batch axis. Constant chains (``DENSIFY`` of TFLite's compressed sparse
tensors, ``DEQUANTIZE`` float16 -> float32) are evaluated here, so the graph holds dense float32 weights.
Any other operator, activation or sparsity layout is refused with its name rather than guessed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

#: NHWC axis -> NCHW axis.
NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}
ACTIVATIONS = {tflite.ActivationFunctionType.NONE: None, tflite.ActivationFunctionType.RELU: "Relu",
               tflite.ActivationFunctionType.RELU6: "Relu6"}  # fmt: skip
TFLITE_DTYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
                 tflite.TensorType.INT32: np.int32}  # fmt: skip


def _index_vector(table: Any, kind: int) -> np.ndarray:
    """The values of a ``SparseIndexVector`` union member (int32, uint16 or uint8 vector)."""
    cls = {tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
           tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
           tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector}[kind]  # fmt: skip
    vector = cls()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Any) -> np.ndarray:
    """Expand a TFLite sparse tensor (the format DENSIFY reads) into a dense array of ``shape``.

    TFLite's format: dimensions visited in ``traversal_order``; each is DENSE (all ``dense_size`` indices)
    or SPARSE_CSR (``segments[parent] .. segments[parent + 1]`` index the stored ``indices``); the stored
    values follow the leaves in visiting order. Block sparsity (a block map) is not used by these models
    and is refused rather than guessed.
    """
    if sparsity.BlockMapLength():
        raise ValueError("block-sparse tensors are not supported")
    order = [int(v) for v in sparsity.TraversalOrderAsNumpy()]
    dims = []
    for k in range(sparsity.DimMetadataLength()):
        meta = sparsity.DimMetadata(k)
        if meta.Format() == tflite.DimensionType.DENSE:
            dims.append(("dense", int(meta.DenseSize()), None, None))
        else:
            segments = _index_vector(meta.ArraySegments(), meta.ArraySegmentsType())
            indices = _index_vector(meta.ArrayIndices(), meta.ArrayIndicesType())
            dims.append(("sparse", 0, segments, indices))
    dense = np.zeros(shape, values.dtype)
    coord = [0] * len(shape)
    cursor = 0

    def visit(level: int, parent: int) -> None:
        nonlocal cursor
        if level == len(order):
            dense[tuple(coord)] = values[cursor]
            cursor += 1
            return
        kind, size, segments, indices = dims[level]
        if kind == "dense":
            for i in range(size):
                coord[order[level]] = i
                visit(level + 1, parent * size + i)
        else:
            for pos in range(int(segments[parent]), int(segments[parent + 1])):
                coord[order[level]] = int(indices[pos])
                visit(level + 1, pos)

    visit(0, 0)
    if cursor != values.size:
        raise ValueError(f"sparse tensor: {values.size} stored values, {cursor} placed")
    return dense


class Converter:
    """Walks one TFLite subgraph in operator order and emits the equivalent NCHW ONNX nodes."""

    def __init__(self, buffer: bytes) -> None:
        self.model = tflite.Model.GetRootAsModel(buffer, 0)
        self.graph = self.model.Subgraphs(0)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.consts: dict[int, np.ndarray] = {}
        self.names: dict[int, str] = {}
        self.layout: dict[int, str] = {}  # "nchw" (4-D activations) or "plain"
        self.counter = 0

    # -- tensors ------------------------------------------------------------------------------------------
    def shape(self, index: int) -> list[int]:
        return [int(v) for v in self.graph.Tensors(index).ShapeAsNumpy()]

    def const(self, index: int) -> np.ndarray | None:
        """The constant value of tensor ``index`` (sparse tensors densified), or None for an activation."""
        if index in self.consts:
            return self.consts[index]
        tensor = self.graph.Tensors(index)
        data = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data is None or len(data) == 0:
            return None
        dtype = TFLITE_DTYPES[tensor.Type()]
        values = np.frombuffer(data.tobytes(), dtype=dtype)
        if tensor.Sparsity() is not None:
            array = densify(values, tuple(self.shape(index)), tensor.Sparsity())
        else:
            array = values.reshape(self.shape(index)) if self.shape(index) else values.reshape(())
        self.consts[index] = array
        return array

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def initializer(self, array: np.ndarray, stem: str) -> str:
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output_index: int | None = None, **attrs: Any) -> str:
        out = self.names[output_index] if output_index is not None else self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(op), **attrs))
        return out

    def fused(self, op: str, inputs: list[str], fused: int, output_index: int, **attrs: Any) -> None:
        """Emit ``op`` followed by its fused activation; the last node writes the TFLite op's output tensor."""
        act = ACTIVATIONS.get(fused, "?")
        if act == "?":
            raise ValueError(f"unsupported fused activation {fused}")
        if act is None:
            self.node(op, inputs, output_index, **attrs)
        elif act == "Relu":
            self.node("Relu", [self.node(op, inputs, **attrs)], output_index)
        else:
            lo, hi = self.initializer(np.float32(0), "lo"), self.initializer(np.float32(6), "hi")
            self.node("Clip", [self.node(op, inputs, **attrs), lo, hi], output_index)

    @staticmethod
    def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
        """TensorFlow's SAME padding (the extra pixel goes after), for one spatial axis."""
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def spatial_pads(self, padding: int, in_shape: list[int], kernel: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int] = (1, 1)) -> list[int]:  # fmt: skip
        if padding == tflite.Padding.VALID:
            return [0, 0, 0, 0]
        (t, b), (left, r) = (self.same_pads(in_shape[1], kernel[0], stride[0], dilation[0]),
                             self.same_pads(in_shape[2], kernel[1], stride[1], dilation[1]))  # fmt: skip
        return [t, left, b, r]

    # -- operators ----------------------------------------------------------------------------------------
    def convert(self) -> onnx.ModelProto:
        g = self.graph
        for i in range(g.TensorsLength()):
            self.names[i] = g.Tensors(i).Name().decode().replace("/", "__").replace(";", "__").replace(":", "_")
        (inp,) = [g.Inputs(i) for i in range(g.InputsLength())]
        n, h, w, c = self.shape(inp)
        self.names[inp] = "input"
        self.layout[inp] = "nchw"
        outputs = [g.Outputs(i) for i in range(g.OutputsLength())]
        for index in outputs:  # the box regressors have 16 values per anchor, the scores 1
            self.names[index] = "regressors" if self.shape(index)[-1] == 16 else "classificators"
        for i in range(g.OperatorsLength()):
            self.operator(g.Operators(i))
        graph = helper.make_graph(
            self.nodes, "blazeface",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", c, h, w])],
            [helper.make_tensor_value_info(self.names[o], TensorProto.FLOAT, ["batch", *self.shape(o)[1:]])
             for o in outputs],
            self.initializers,
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="convert_blazeface")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model

    def operator(self, op: Any) -> None:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        name = tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        ins = [op.Inputs(i) for i in range(op.InputsLength())]
        out = op.Outputs(0)
        handler = getattr(self, f"op_{name.lower()}", None)
        if handler is None:
            raise ValueError(f"TFLite operator {name} is not supported by this converter")
        handler(op, ins, out)

    def options(self, op: Any, cls: Any) -> Any:
        table = op.BuiltinOptions()
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def op_densify(self, op: Any, ins: list[int], out: int) -> None:
        value = self.const(ins[0])
        if value is None:
            raise ValueError("DENSIFY of a non-constant tensor")
        self.consts[out] = value

    def op_dequantize(self, op: Any, ins: list[int], out: int) -> None:
        value = self.const(ins[0])
        if value is None or value.dtype != np.float16:
            raise ValueError("only float16 -> float32 DEQUANTIZE of constants is supported")
        self.consts[out] = value.astype(np.float32)

    def op_conv_2d(self, op: Any, ins: list[int], out: int, depthwise: bool = False) -> None:
        opts = self.options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        weight = self.const(ins[1])  # conv [O, kh, kw, I]; depthwise [1, kh, kw, C * multiplier]
        assert weight is not None
        stride, dilation = (opts.StrideH(), opts.StrideW()), (opts.DilationHFactor(), opts.DilationWFactor())
        pads = self.spatial_pads(opts.Padding(), self.shape(ins[0]), weight.shape[1:3], stride, dilation)
        kernel = weight.transpose(3, 0, 1, 2) if depthwise else weight.transpose(0, 3, 1, 2)
        inputs = [self.names[ins[0]], self.initializer(kernel, "w")]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.initializer(self.const(ins[2]).astype(np.float32), "b"))
        group = {"group": self.shape(ins[0])[3]} if depthwise else {}
        self.fused("Conv", inputs, opts.FusedActivationFunction(), out, kernel_shape=list(weight.shape[1:3]),
                   strides=list(stride), dilations=list(dilation), pads=pads, **group)  # fmt: skip
        self.layout[out] = "nchw"

    def op_depthwise_conv_2d(self, op: Any, ins: list[int], out: int) -> None:
        self.op_conv_2d(op, ins, out, depthwise=True)

    def op_add(self, op: Any, ins: list[int], out: int) -> None:
        opts = self.options(op, tflite.AddOptions)
        operands = []
        for index in ins:
            value = self.const(index)
            if value is None:
                operands.append(self.names[index])
            else:  # a per-channel constant broadcast over NHWC: move its channels to axis 1
                value = value.astype(np.float32)
                operands.append(self.initializer(value.reshape(-1, 1, 1) if value.ndim == 1 else value, "c"))
        self.fused("Add", operands, opts.FusedActivationFunction(), out)
        self.layout[out] = "nchw"

    def op_relu(self, op: Any, ins: list[int], out: int) -> None:
        self.node("Relu", [self.names[ins[0]]], out)
        self.layout[out] = self.layout[ins[0]]

    def op_pad(self, op: Any, ins: list[int], out: int) -> None:
        paddings = self.const(ins[1])  # [4, 2] in NHWC order
        assert paddings is not None
        before = [0] * 4
        after = [0] * 4
        for axis in range(4):
            before[NHWC_TO_NCHW[axis]] = int(paddings[axis, 0])
            after[NHWC_TO_NCHW[axis]] = int(paddings[axis, 1])
        pads = self.initializer(np.asarray(before + after, np.int64), "pads")
        self.node("Pad", [self.names[ins[0]], pads], out, mode="constant")
        self.layout[out] = "nchw"

    def op_max_pool_2d(self, op: Any, ins: list[int], out: int) -> None:
        opts = self.options(op, tflite.Pool2DOptions)
        kernel, stride = (opts.FilterHeight(), opts.FilterWidth()), (opts.StrideH(), opts.StrideW())
        pads = self.spatial_pads(opts.Padding(), self.shape(ins[0]), kernel, stride)
        self.fused("MaxPool", [self.names[ins[0]]], opts.FusedActivationFunction(), out, kernel_shape=list(kernel),
                   strides=list(stride), pads=pads)  # fmt: skip
        self.layout[out] = "nchw"

    def op_resize_bilinear(self, op: Any, ins: list[int], out: int) -> None:
        opts = self.options(op, tflite.ResizeBilinearOptions)
        src, dst = self.shape(ins[0]), self.shape(out)
        if opts.AlignCorners():
            mode = "align_corners"
        elif opts.HalfPixelCenters():
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        scales = self.initializer(np.asarray([1, 1, dst[1] / src[1], dst[2] / src[2]], np.float32), "scales")
        self.node("Resize", [self.names[ins[0]], "", scales], out, mode="linear",
                  coordinate_transformation_mode=mode)  # fmt: skip
        self.layout[out] = "nchw"

    def op_depth_to_space(self, op: Any, ins: list[int], out: int) -> None:
        opts = self.options(op, tflite.DepthToSpaceOptions)
        # TensorFlow's NHWC DepthToSpace orders depth as (block_row, block_col, channel): ONNX's DCR on NCHW.
        self.node("DepthToSpace", [self.names[ins[0]]], out, blocksize=opts.BlockSize(), mode="DCR")
        self.layout[out] = "nchw"

    def op_reshape(self, op: Any, ins: list[int], out: int) -> None:
        source = self.names[ins[0]]
        if self.layout.get(ins[0]) == "nchw":  # TFLite reshapes NHWC memory: go back to it first
            source = self.node("Transpose", [source], perm=[0, 2, 3, 1])
        target = [-1, *self.shape(out)[1:]]  # batch stays dynamic; the other axes are static
        shape = self.initializer(np.asarray(target, np.int64), "shape")
        self.node("Reshape", [source, shape], out)
        self.layout[out] = "plain"

    def op_concatenation(self, op: Any, ins: list[int], out: int) -> None:
        opts = self.options(op, tflite.ConcatenationOptions)
        layouts = {self.layout[i] for i in ins}
        if len(layouts) != 1:
            raise ValueError("CONCATENATION of tensors in different layouts")
        axis = opts.Axis() % len(self.shape(out))
        if layouts == {"nchw"}:
            axis = NHWC_TO_NCHW[axis]
        self.fused("Concat", [self.names[i] for i in ins], opts.FusedActivationFunction(), out, axis=axis)
        self.layout[out] = layouts.pop()
