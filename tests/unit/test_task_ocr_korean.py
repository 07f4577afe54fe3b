"""Korean OCR out of the box: Debian's tesseract-ocr-kor found on the default search path.

`make test` installs tesseract-ocr-kor and fonts-nanum where it can (see the Makefile's `korean`
target); elsewhere these tests are skipped and say why.
"""

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from coopgrid.datasets import Dataset
from coopgrid.tasks.base import run_local
from coopgrid.tasks.common import normalized_distance
from coopgrid.tasks.ocr import DEBIAN_TESSDATA, MissingLanguage, OcrTask, find_traineddata

FONTS = (
    "/usr/share/fonts/truetype/nanum/NanumGothic.ttf",  # fonts-nanum
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk
)
LINES = ["안녕하세요 세계", "협동 그리드 계산", "한국어 문자 인식", "작업자가 결과에 서명합니다"]


@pytest.fixture(scope="module")
def korean_font():
    font = next((f for f in FONTS if Path(f).is_file()), None)
    if font is None:
        pytest.skip("no Korean font: apt-get install fonts-nanum (make test does where apt-get works as root)")
    return font


@pytest.fixture(scope="module")
def kor_traineddata():
    try:
        return find_traineddata(["kor"])
    except MissingLanguage:
        pytest.skip("no kor.traineddata: apt-get install tesseract-ocr-kor (make test does where apt-get works as root)")


def render(text: str, font_path: str, size: int = 32) -> bytes:
    font = ImageFont.truetype(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (right + 32, bottom + 24), 255)
    ImageDraw.Draw(img).text((16, 12), text, font=font, fill=0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_debian_s_korean_traineddata_is_on_the_default_path(kor_traineddata):
    # found without any COOPGRID_TESSDATA_PATH: where Debian's package puts it
    assert str(kor_traineddata) in DEBIAN_TESSDATA


def test_rendered_korean_lines_are_read(korean_font, kor_traineddata, tmp_path):
    data = Dataset.from_items([render(t, korean_font) for t in LINES], "image", [f"ko-{i}.png" for i in range(len(LINES))])
    figures, outputs = run_local(OcrTask(), data, 2, {"lang": "kor", "psm": 7}, out=tmp_path / "o.parquet")
    texts = [item["text"] for o in outputs for item in o.output["items"]]
    assert figures["items_read"] == len(LINES) and figures["item_errors"] == 0
    distance = sum(normalized_distance(got, want) for got, want in zip(texts, LINES)) / len(LINES)
    print(f"Korean OCR mean normalized edit distance over {len(LINES)} lines: {distance:.4f}")
    assert distance < 0.05, texts
