"""Names of the selectable architectures, importable without TensorFlow so that the
CLI's --help and the app's forms stay fast."""

TEXT_ARCHS = ("tfidf", "bilstm")
DEFAULT_TEXT_ARCH = "tfidf"

BACKBONE_NAMES = ("efficientnet_lite0", "mobilenet_v2", "efficientnet_b0", "vgg16", "resnet50")
DEFAULT_BACKBONE = "efficientnet_lite0"
