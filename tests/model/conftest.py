import pytest
import torch

from qinyu.layout import TokenLayout, byte_tokenizer
from qinyu.model import QinYuForConditionalGeneration, preset_config


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def layout(tokenizer):
    return TokenLayout.from_tokenizer(tokenizer)


@pytest.fixture
def tiny(layout):
    torch.manual_seed(0)
    return QinYuForConditionalGeneration(preset_config("tiny", layout)).eval()
