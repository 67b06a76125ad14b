import keras
from keras import layers

from experiments.pipelines.flops import model_flops


def test_counts_match_hand_computed_values():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)  # 2*64*9*3*4 = 13,824
    x = layers.SeparableConv2D(6, 3, strides=2, padding="same")(x)  # 2*16*(9*4 + 4*6) = 1,920
    x = layers.DepthwiseConv2D(3, padding="same")(x)  # 2*16*9*6 = 1,728
    x = layers.Conv2DTranspose(2, 2, strides=2)(x)  # 2*16*(2*2)*6*2 = 1,536
    x = layers.BatchNormalization()(x)  # not counted
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5)(x)  # 2*2*5 = 20
    model = keras.Model(inputs, outputs)
    assert model_flops(model) == 13_824 + 1_920 + 1_728 + 1_536 + 20


def test_nested_models_are_counted_through():
    inner = keras.Sequential([keras.Input((4, 4, 2)), layers.Conv2D(3, 1)], name="backbone")  # 2*16*2*3 = 192
    inputs = keras.Input((4, 4, 2))
    outputs = layers.Conv2D(1, 1)(inner(inputs))  # 2*16*3*1 = 96
    assert model_flops(keras.Model(inputs, outputs)) == 192 + 96
