"""Networks: ResNet v1 encoders and the SimCLR projection head."""
from medssl_jax.models.heads import ProjectionHead
from medssl_jax.models.resnet import ResNet, feature_dim
from medssl_jax.models.densenet import DenseNet, feature_dim as densenet_feature_dim
from medssl_jax.models.vit import ViT, vit, feature_dim as vit_feature_dim
from medssl_jax.models.contrastive import ContrastiveModel, from_config
from medssl_jax.models.classifier import Classifier, classifier_from_config
