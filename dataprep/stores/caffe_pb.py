"""Caffe's protobuf messages (proto2, names and field numbers as in BVLC caffe.proto): the
store records ``Datum`` and ``BlobProto``, and the model files' ``NetParameter``,
``LayerParameter`` (with the parameter messages of the layers dataprep runs) and
``SolverParameter``.

The subset is written below in .proto syntax and turned into a descriptor by a small
reader of that syntax; the protobuf library builds the classes, in a private pool, so they
never clash with a ``caffe_pb2`` module the user may also have loaded, and its
``text_format`` reads and writes prototxt.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

CAFFE_PROTO = """
message BlobShape { repeated int64 dim = 1 [packed = true]; }
message SolverState {
  optional int32 iter = 1;
  optional string learned_net = 2;
  repeated BlobProto history = 3;
  optional int32 current_step = 4 [default = 0];
}
message BlobProto {
  optional BlobShape shape = 7;
  repeated float data = 5 [packed = true];
  repeated float diff = 6 [packed = true];
  repeated double double_data = 8 [packed = true];
  repeated double double_diff = 9 [packed = true];
  optional int32 num = 1;
  optional int32 channels = 2;
  optional int32 height = 3;
  optional int32 width = 4;
}
message Datum {
  optional int32 channels = 1;
  optional int32 height = 2;
  optional int32 width = 3;
  optional bytes data = 4;
  optional int32 label = 5;
  repeated float float_data = 6;
  optional bool encoded = 7 [default = false];
}
message FillerParameter {
  optional string type = 1 [default = "constant"];
  optional float value = 2 [default = 0];
  optional float min = 3 [default = 0];
  optional float max = 4 [default = 1];
  optional float mean = 5 [default = 0];
  optional float std = 6 [default = 1];
  optional int32 sparse = 7 [default = -1];
  optional VarianceNorm variance_norm = 8 [default = FAN_IN];
}
enum VarianceNorm { FAN_IN = 0; FAN_OUT = 1; AVERAGE = 2; }
message NetParameter {
  optional string name = 1;
  repeated string input = 3;
  repeated BlobShape input_shape = 8;
  repeated int32 input_dim = 4;
  optional bool force_backward = 5 [default = false];
  optional NetState state = 6;
  optional bool debug_info = 7 [default = false];
  repeated LayerParameter layer = 100;
  repeated V1LayerParameter layers = 2;
}
message V1LayerParameter {
  repeated string bottom = 2;
  repeated string top = 3;
  optional string name = 4;
  repeated NetStateRule include = 32;
  repeated NetStateRule exclude = 33;
  optional LayerType type = 5;
  repeated BlobProto blobs = 6;
  repeated string param = 1001;
  repeated DimCheckMode blob_share_mode = 1002;
  repeated float blobs_lr = 7;
  repeated float weight_decay = 8;
  repeated float loss_weight = 35;
  optional AccuracyParameter accuracy_param = 27;
  optional ArgMaxParameter argmax_param = 23;
  optional ConcatParameter concat_param = 9;
  optional ContrastiveLossParameter contrastive_loss_param = 40;
  optional ConvolutionParameter convolution_param = 10;
  optional DataParameter data_param = 11;
  optional DropoutParameter dropout_param = 12;
  optional EltwiseParameter eltwise_param = 24;
  optional ExpParameter exp_param = 41;
  optional HDF5DataParameter hdf5_data_param = 13;
  optional InnerProductParameter inner_product_param = 17;
  optional LRNParameter lrn_param = 18;
  optional PoolingParameter pooling_param = 19;
  optional PowerParameter power_param = 21;
  optional ReLUParameter relu_param = 30;
  optional SigmoidParameter sigmoid_param = 38;
  optional SoftmaxParameter softmax_param = 39;
  optional SliceParameter slice_param = 31;
  optional TanHParameter tanh_param = 37;
  optional TransformationParameter transform_param = 36;
  optional LossParameter loss_param = 42;
  optional ImageDataParameter image_data_param = 15;
}
enum V1LayerParameter.LayerType {
  NONE = 0; ABSVAL = 35; ACCURACY = 1; ARGMAX = 30; BNLL = 2; CONCAT = 3; CONTRASTIVE_LOSS = 37;
  CONVOLUTION = 4; DATA = 5; DECONVOLUTION = 39; DROPOUT = 6; DUMMY_DATA = 32; EUCLIDEAN_LOSS = 7;
  ELTWISE = 25; EXP = 38; FLATTEN = 8; HDF5_DATA = 9; HDF5_OUTPUT = 10; HINGE_LOSS = 28; IM2COL = 11;
  IMAGE_DATA = 12; INFOGAIN_LOSS = 13; INNER_PRODUCT = 14; LRN = 15; MEMORY_DATA = 29;
  MULTINOMIAL_LOGISTIC_LOSS = 16; MVN = 34; POOLING = 17; POWER = 26; RELU = 18; SIGMOID = 19;
  SIGMOID_CROSS_ENTROPY_LOSS = 27; SILENCE = 36; SOFTMAX = 20; SOFTMAX_LOSS = 21; SPLIT = 22;
  SLICE = 33; TANH = 23; WINDOW_DATA = 24; THRESHOLD = 31;
}
message SolverParameter {
  optional string net = 24;
  optional NetParameter net_param = 25;
  optional string train_net = 1;
  repeated string test_net = 2;
  optional NetParameter train_net_param = 21;
  repeated NetParameter test_net_param = 22;
  optional NetState train_state = 26;
  repeated NetState test_state = 27;
  repeated int32 test_iter = 3;
  optional int32 test_interval = 4 [default = 0];
  optional bool test_compute_loss = 19 [default = false];
  optional bool test_initialization = 32 [default = true];
  optional float base_lr = 5;
  optional int32 display = 6;
  optional int32 average_loss = 33 [default = 1];
  optional int32 max_iter = 7;
  optional int32 iter_size = 36 [default = 1];
  optional string lr_policy = 8;
  optional float gamma = 9;
  optional float power = 10;
  optional float momentum = 11;
  optional float weight_decay = 12;
  optional string regularization_type = 29 [default = "L2"];
  optional int32 stepsize = 13;
  repeated int32 stepvalue = 34;
  optional float clip_gradients = 35 [default = -1];
  optional int32 snapshot = 14 [default = 0];
  optional string snapshot_prefix = 15;
  optional bool snapshot_diff = 16 [default = false];
  optional SnapshotFormat snapshot_format = 37 [default = BINARYPROTO];
  optional SolverMode solver_mode = 17 [default = GPU];
  optional int32 device_id = 18 [default = 0];
  optional int64 random_seed = 20 [default = -1];
  optional string type = 40 [default = "SGD"];
  repeated string weights = 42;
  optional float delta = 31 [default = 1e-8];
  optional float momentum2 = 39 [default = 0.999];
  optional float rms_decay = 38 [default = 0.99];
  optional bool debug_info = 23 [default = false];
  optional bool snapshot_after_train = 28 [default = true];
  optional SolverType solver_type = 30 [default = SGD];
  optional bool layer_wise_reduce = 41 [default = true];
}
enum SnapshotFormat { HDF5 = 0; BINARYPROTO = 1; }
enum SolverMode { CPU = 0; GPU = 1; }
enum SolverType { SGD = 0; NESTEROV = 1; ADAGRAD = 2; RMSPROP = 3; ADADELTA = 4; ADAM = 5; }
enum Phase { TRAIN = 0; TEST = 1; }
message NetState {
  optional Phase phase = 1 [default = TEST];
  optional int32 level = 2 [default = 0];
  repeated string stage = 3;
}
message NetStateRule {
  optional Phase phase = 1;
  optional int32 min_level = 2;
  optional int32 max_level = 3;
  repeated string stage = 4;
  repeated string not_stage = 5;
}
message ParamSpec {
  optional string name = 1;
  optional DimCheckMode share_mode = 2;
  optional float lr_mult = 3 [default = 1.0];
  optional float decay_mult = 4 [default = 1.0];
}
enum DimCheckMode { STRICT = 0; PERMISSIVE = 1; }
message LayerParameter {
  optional string name = 1;
  optional string type = 2;
  repeated string bottom = 3;
  repeated string top = 4;
  optional Phase phase = 10;
  repeated float loss_weight = 5;
  repeated ParamSpec param = 6;
  repeated BlobProto blobs = 7;
  repeated bool propagate_down = 11;
  repeated NetStateRule include = 8;
  repeated NetStateRule exclude = 9;
  optional TransformationParameter transform_param = 100;
  optional LossParameter loss_param = 101;
  optional AccuracyParameter accuracy_param = 102;
  optional BatchNormParameter batch_norm_param = 139;
  optional ConvolutionParameter convolution_param = 106;
  optional DataParameter data_param = 107;
  optional DropoutParameter dropout_param = 108;
  optional FlattenParameter flatten_param = 135;
  optional HDF5DataParameter hdf5_data_param = 112;
  optional InnerProductParameter inner_product_param = 117;
  optional InputParameter input_param = 143;
  optional LRNParameter lrn_param = 118;
  optional PoolingParameter pooling_param = 121;
  optional PowerParameter power_param = 122;
  optional ReLUParameter relu_param = 123;
  optional ScaleParameter scale_param = 142;
  optional SigmoidParameter sigmoid_param = 124;
  optional SoftmaxParameter softmax_param = 125;
  optional TanHParameter tanh_param = 127;
  optional ArgMaxParameter argmax_param = 103;
  optional BiasParameter bias_param = 141;
  optional ConcatParameter concat_param = 104;
  optional CropParameter crop_param = 144;
  optional EltwiseParameter eltwise_param = 110;
  optional ELUParameter elu_param = 140;
  optional ExpParameter exp_param = 111;
  optional LogParameter log_param = 134;
  optional PReLUParameter prelu_param = 131;
  optional ReshapeParameter reshape_param = 133;
  optional SliceParameter slice_param = 126;
  optional ContrastiveLossParameter contrastive_loss_param = 105;
  optional ImageDataParameter image_data_param = 115;
  optional ClipParameter clip_param = 148;
  optional SwishParameter swish_param = 147;
  optional ThresholdParameter threshold_param = 128;
  optional TileParameter tile_param = 138;
  optional ReductionParameter reduction_param = 136;
  optional MVNParameter mvn_param = 120;
  optional EmbedParameter embed_param = 137;
  optional ParameterParameter parameter_param = 145;
  optional HingeLossParameter hinge_loss_param = 114;
  optional InfogainLossParameter infogain_loss_param = 116;
  optional SPPParameter spp_param = 132;
  optional DummyDataParameter dummy_data_param = 109;
}
message ArgMaxParameter {
  optional bool out_max_val = 1 [default = false];
  optional uint32 top_k = 2 [default = 1];
  optional int32 axis = 3;
}
message BiasParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 num_axes = 2 [default = 1];
  optional FillerParameter filler = 3;
}
message ConcatParameter {
  optional int32 axis = 2 [default = 1];
  optional uint32 concat_dim = 1 [default = 1];
}
message CropParameter {
  optional int32 axis = 1 [default = 2];
  repeated uint32 offset = 2;
}
message EltwiseParameter {
  optional EltwiseOp operation = 1 [default = SUM];
  repeated float coeff = 2;
  optional bool stable_prod_grad = 3 [default = true];
}
enum EltwiseParameter.EltwiseOp { PROD = 0; SUM = 1; MAX = 2; }
message ELUParameter { optional float alpha = 1 [default = 1]; }
message ExpParameter {
  optional float base = 1 [default = -1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message LogParameter {
  optional float base = 1 [default = -1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message PReLUParameter {
  optional FillerParameter filler = 1;
  optional bool channel_shared = 2 [default = false];
}
message ReshapeParameter {
  optional BlobShape shape = 1;
  optional int32 axis = 2 [default = 0];
  optional int32 num_axes = 3 [default = -1];
}
message SliceParameter {
  optional int32 axis = 3 [default = 1];
  repeated uint32 slice_point = 2;
  optional uint32 slice_dim = 1 [default = 1];
}
message TransformationParameter {
  optional float scale = 1 [default = 1];
  optional bool mirror = 2 [default = false];
  optional uint32 crop_size = 3 [default = 0];
  optional string mean_file = 4;
  repeated float mean_value = 5;
  optional bool force_color = 6 [default = false];
  optional bool force_gray = 7 [default = false];
}
message LossParameter {
  optional int32 ignore_label = 1;
  optional NormalizationMode normalization = 3 [default = VALID];
  optional bool normalize = 2;
}
enum NormalizationMode { FULL = 0; VALID = 1; BATCH_SIZE = 2; NONE = 3; }
message AccuracyParameter {
  optional uint32 top_k = 1 [default = 1];
  optional int32 axis = 2 [default = 1];
  optional int32 ignore_label = 3;
}
message BatchNormParameter {
  optional bool use_global_stats = 1;
  optional float moving_average_fraction = 2 [default = 0.999];
  optional float eps = 3 [default = 1e-5];
}
enum Engine { DEFAULT = 0; CAFFE = 1; CUDNN = 2; }
message ConvolutionParameter {
  optional uint32 num_output = 1;
  optional bool bias_term = 2 [default = true];
  repeated uint32 pad = 3;
  repeated uint32 kernel_size = 4;
  repeated uint32 stride = 6;
  repeated uint32 dilation = 18;
  optional uint32 pad_h = 9 [default = 0];
  optional uint32 pad_w = 10 [default = 0];
  optional uint32 kernel_h = 11;
  optional uint32 kernel_w = 12;
  optional uint32 stride_h = 13;
  optional uint32 stride_w = 14;
  optional uint32 group = 5 [default = 1];
  optional FillerParameter weight_filler = 7;
  optional FillerParameter bias_filler = 8;
  optional Engine engine = 15 [default = DEFAULT];
  optional int32 axis = 16 [default = 1];
  optional bool force_nd_im2col = 17 [default = false];
}
message DataParameter {
  optional string source = 1;
  optional uint32 batch_size = 4;
  optional uint32 rand_skip = 7 [default = 0];
  optional DB backend = 8 [default = LEVELDB];
  optional float scale = 2 [default = 1];
  optional string mean_file = 3;
  optional uint32 crop_size = 5 [default = 0];
  optional bool mirror = 6 [default = false];
  optional bool force_encoded_color = 9 [default = false];
  optional uint32 prefetch = 10 [default = 4];
}
enum DB { LEVELDB = 0; LMDB = 1; }
message DropoutParameter { optional float dropout_ratio = 1 [default = 0.5]; }
message FlattenParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 end_axis = 2 [default = -1];
}
message HDF5DataParameter {
  optional string source = 1;
  optional uint32 batch_size = 2;
  optional bool shuffle = 3 [default = false];
}
message InnerProductParameter {
  optional uint32 num_output = 1;
  optional bool bias_term = 2 [default = true];
  optional FillerParameter weight_filler = 3;
  optional FillerParameter bias_filler = 4;
  optional int32 axis = 5 [default = 1];
  optional bool transpose = 6 [default = false];
}
message InputParameter { repeated BlobShape shape = 1; }
message ClipParameter { optional float min = 1; optional float max = 2; }
message SwishParameter { optional float beta = 1 [default = 1]; }
message ThresholdParameter { optional float threshold = 1 [default = 0]; }
message TileParameter { optional int32 axis = 1 [default = 1]; optional int32 tiles = 2; }
message ReductionParameter {
  optional ReductionOp operation = 1 [default = SUM];
  optional int32 axis = 2 [default = 0];
  optional float coeff = 3 [default = 1.0];
}
enum ReductionParameter.ReductionOp { SUM = 1; ASUM = 2; SUMSQ = 3; MEAN = 4; }
message MVNParameter {
  optional bool normalize_variance = 1 [default = true];
  optional bool across_channels = 2 [default = false];
  optional float eps = 3 [default = 1e-9];
}
message EmbedParameter {
  optional uint32 num_output = 1;
  optional uint32 input_dim = 2;
  optional bool bias_term = 3 [default = true];
  optional FillerParameter weight_filler = 4;
  optional FillerParameter bias_filler = 5;
}
message ParameterParameter { optional BlobShape shape = 1; }
message HingeLossParameter { optional Norm norm = 1 [default = L1]; }
enum HingeLossParameter.Norm { L1 = 1; L2 = 2; }
message InfogainLossParameter {
  optional string source = 1;
  optional int32 axis = 2 [default = 1];
}
message DummyDataParameter {
  repeated FillerParameter data_filler = 1;
  repeated BlobShape shape = 6;
  repeated uint32 num = 2;
  repeated uint32 channels = 3;
  repeated uint32 height = 4;
  repeated uint32 width = 5;
}
message SPPParameter {
  optional uint32 pyramid_height = 1;
  optional PoolMethod pool = 2 [default = MAX];
  optional Engine engine = 6 [default = DEFAULT];
}
enum SPPParameter.PoolMethod { MAX = 0; AVE = 1; STOCHASTIC = 2; }
message ImageDataParameter {
  optional string source = 1;
  optional uint32 batch_size = 4 [default = 1];
  optional uint32 rand_skip = 7 [default = 0];
  optional float scale = 2 [default = 1];
  optional string mean_file = 3;
  optional uint32 crop_size = 5 [default = 0];
  optional bool mirror = 6 [default = false];
  optional bool shuffle = 8 [default = false];
  optional uint32 new_height = 9 [default = 0];
  optional uint32 new_width = 10 [default = 0];
  optional bool is_color = 11 [default = true];
  optional string root_folder = 12 [default = ""];
}
message ContrastiveLossParameter {
  optional float margin = 1 [default = 1.0];
  optional bool legacy_version = 2 [default = false];
}
message LRNParameter {
  optional uint32 local_size = 1 [default = 5];
  optional float alpha = 2 [default = 1.];
  optional float beta = 3 [default = 0.75];
  optional NormRegion norm_region = 4 [default = ACROSS_CHANNELS];
  optional float k = 5 [default = 1.];
  optional Engine engine = 6 [default = DEFAULT];
}
enum NormRegion { ACROSS_CHANNELS = 0; WITHIN_CHANNEL = 1; }
message PoolingParameter {
  optional PoolMethod pool = 1 [default = MAX];
  optional uint32 pad = 4 [default = 0];
  optional uint32 pad_h = 9 [default = 0];
  optional uint32 pad_w = 10 [default = 0];
  optional uint32 kernel_size = 2;
  optional uint32 kernel_h = 5;
  optional uint32 kernel_w = 6;
  optional uint32 stride = 3 [default = 1];
  optional uint32 stride_h = 7;
  optional uint32 stride_w = 8;
  optional Engine engine = 11 [default = DEFAULT];
  optional bool global_pooling = 12 [default = false];
}
enum PoolMethod { MAX = 0; AVE = 1; STOCHASTIC = 2; }
message PowerParameter {
  optional float power = 1 [default = 1.0];
  optional float scale = 2 [default = 1.0];
  optional float shift = 3 [default = 0.0];
}
message ReLUParameter {
  optional float negative_slope = 1 [default = 0];
  optional Engine engine = 2 [default = DEFAULT];
}
message ScaleParameter {
  optional int32 axis = 1 [default = 1];
  optional int32 num_axes = 2 [default = 1];
  optional FillerParameter filler = 3;
  optional bool bias_term = 4 [default = false];
  optional FillerParameter bias_filler = 5;
}
message SigmoidParameter { optional Engine engine = 1 [default = DEFAULT]; }
message SoftmaxParameter {
  optional Engine engine = 1 [default = DEFAULT];
  optional int32 axis = 2 [default = 1];
}
message TanHParameter { optional Engine engine = 1 [default = DEFAULT]; }
"""

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _F.TYPE_DOUBLE,
    "float": _F.TYPE_FLOAT,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}
_BLOCK = re.compile(r"(message|enum)\s+([\w.]+)\s*\{(.*?)\}\s*(?=message|enum|$)", re.S)
_FIELD = re.compile(r"(optional|repeated)\s+(\w+)\s+(\w+)\s*=\s*(\d+)\s*(?:\[(.*?)\])?\s*;")
_VALUE = re.compile(r"(\w+)\s*=\s*(-?\d+)\s*;")


def _file_descriptor(text: str) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor of proto2 text limited to what CAFFE_PROTO uses: top-level messages
    and enums, optional and repeated fields with ``packed`` and ``default`` options. An
    enum named ``Message.Enum`` is nested in its message (its value names are then scoped
    there: Eltwise's MAX beside Pooling's)."""
    proto = descriptor_pb2.FileDescriptorProto(name="dataprep/caffe.proto", package="caffe", syntax="proto2")
    blocks = _BLOCK.findall(text.strip())
    enums = {name for kind, name, _ in blocks if kind == "enum"}
    messages = {}
    for kind, name, body in sorted(blocks, key=lambda block: block[0] == "enum"):  # messages first
        if kind == "enum":
            outer, _, inner = name.rpartition(".")
            enum = (messages[outer].enum_type if outer else proto.enum_type).add(name=inner)
            for value, number in _VALUE.findall(body):
                enum.value.add(name=value, number=int(number))
            continue
        message = messages[name] = proto.message_type.add(name=name)
        for label, ftype, fname, number, options in _FIELD.findall(body):
            field = message.field.add(
                name=fname,
                number=int(number),
                label=_F.LABEL_OPTIONAL if label == "optional" else _F.LABEL_REPEATED,
            )
            if ftype in _SCALARS:
                field.type = _SCALARS[ftype]
            elif f"{name}.{ftype}" in enums:
                field.type, field.type_name = _F.TYPE_ENUM, f".caffe.{name}.{ftype}"
            else:
                field.type = _F.TYPE_ENUM if ftype in enums else _F.TYPE_MESSAGE
                field.type_name = f".caffe.{ftype}"
            for option in filter(None, (o.strip() for o in (options or "").split(","))):
                key, _, value = (part.strip() for part in option.partition("="))
                if key == "packed":
                    field.options.packed = value == "true"
                else:  # default
                    field.default_value = value.strip('"')
    return proto


def _build_messages() -> dict[str, type]:
    proto = _file_descriptor(CAFFE_PROTO)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{m.name}"))
        for m in proto.message_type
    }


_MESSAGES = _build_messages()
Datum = _MESSAGES["Datum"]
BlobProto = _MESSAGES["BlobProto"]
NetParameter = _MESSAGES["NetParameter"]
LayerParameter = _MESSAGES["LayerParameter"]
SolverParameter = _MESSAGES["SolverParameter"]
SolverState = _MESSAGES["SolverState"]


def datum_raw(image: np.ndarray, label: int = 0) -> bytes:
    """A raw Datum of an H x W x C uint8 image: pixels in C x H x W order, as CVMatToDatum."""
    from ..images import planar_bytes

    height, width, channels = image.shape
    datum = Datum(
        channels=channels,
        height=height,
        width=width,
        data=planar_bytes(image),
        label=label,
        encoded=False,
    )
    return datum.SerializeToString()


def datum_encoded(data: bytes, label: int = 0) -> bytes:
    """An encoded Datum: the image file's bytes, the label and ``encoded = true`` only."""
    return Datum(data=data, label=label, encoded=True).SerializeToString()


def datum_floats(values: Sequence[float], label: int = 0, shape: Sequence[int] | None = None) -> bytes:
    """A float Datum: ``float_data`` with its C x H x W ``shape`` (extract_features' layout
    for a layer's outputs), or channels = len(values), height = width = 1 (a label store)."""
    values = np.asarray(values, np.float32).ravel()
    channels, height, width = shape if shape is not None else (len(values), 1, 1)
    return Datum(
        channels=channels,
        height=height,
        width=width,
        label=label,
        float_data=values.tolist(),
        encoded=False,
    ).SerializeToString()


def parse_datum(value: bytes):
    """The Datum message of serialized bytes."""
    datum = Datum()
    datum.ParseFromString(value)
    return datum


def blob_bytes(array: np.ndarray) -> bytes:
    """A BlobProto of a C x H x W (or 1 x C x H x W) array, as compute_image_mean writes it."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    num, channels, height, width = array.shape
    blob = BlobProto(num=num, channels=channels, height=height, width=width)
    blob.data.extend(array.ravel().tolist())
    return blob.SerializeToString()


def blob_message(array: np.ndarray):
    """A BlobProto of an array of any shape (``shape`` dims, float data), as Caffe writes
    parameters."""
    array = np.asarray(array, dtype=np.float32)
    blob = BlobProto()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(array.ravel().tolist())
    return blob


def blob_to_array(blob) -> np.ndarray:
    """The float32 array of a BlobProto message (``shape`` dims, or the legacy 4-D ones)."""
    dims = (
        list(blob.shape.dim) if blob.HasField("shape") else [blob.num, blob.channels, blob.height, blob.width]
    )
    values = blob.data if len(blob.data) else blob.double_data
    claimed = int(np.prod(dims, dtype=np.float64))
    if claimed != len(values):
        raise ValueError(f"a blob of shape {tuple(dims)} ({claimed:.0f} values) holds {len(values)} values")
    return np.asarray(values, dtype=np.float32).reshape(dims)


def blob_array(value: bytes) -> np.ndarray:
    """The N x C x H x W float32 array of a serialized BlobProto (legacy dims or ``shape``)."""
    blob = BlobProto()
    blob.ParseFromString(value)
    return blob_to_array(blob)
