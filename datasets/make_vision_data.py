"""Build datasets/vision/: about 100 small images with question-and-answer conversations about them.

    python datasets/make_vision_data.py            # rewrites datasets/vision/{train,test}.jsonl and images/

Four kinds of picture, drawn with PIL from a fixed seed (the same files every run):
  shapes    1-4 circles, squares or triangles of one colour     "How many shapes ...?"  then  "它们是什么颜色？"
  bars      a bar chart of three labelled bars                  "Which bar is the tallest?"  then  "最短的是哪一个？"
  words     an English word or a number written in black       "What is written in the image?"
  hanzi     the Chinese numerals 一 二 三 十, drawn as strokes   "图中写的是哪个汉字？"
(No CJK font ships with PIL, and a system font would make the pixels depend on the machine, so Chinese text
is in the conversations, and the Chinese numerals are drawn from their straight strokes.)
Images are 64-128 px PNGs with a few colours, about 1 KB each. Each row of train.jsonl / test.jsonl is
{"messages": [...]} with the image as a content part {"type": "image", "image": "images/NAME.png"}, a path
relative to the JSONL file. test.jsonl is the held-out split: 12 rows, 3 of each kind, the kinds taking turns.
"""
import json
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent / "vision"
COLOURS = {"red": ((220, 40, 40), "红色"), "green": ((40, 160, 60), "绿色"), "blue": ((40, 80, 220), "蓝色"),
           "orange": ((240, 150, 30), "橙色")}
SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
WORDS = ["apple", "river", "cloud", "tiger", "bread", "music", "green", "stone", "light", "paper", "42", "2026",
         "7 + 5"]
HANZI = {"一": "one", "二": "two", "三": "three", "十": "ten"}
NUMBER_WORDS = ["zero", "one", "two", "three", "four"]
PER_KIND = 25  # 4 kinds x 25 = 100 images
HELD_OUT = 3  # of each kind


def user(image: str, text: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}


def say(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def shapes(rng: random.Random, name: str):
    image = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(image)
    shape, colour = rng.choice(list(SHAPES)), rng.choice(list(COLOURS))
    count = rng.randint(1, 4)
    rgb, colour_zh = COLOURS[colour]
    for k in range(count):  # one shape per quadrant, so they never overlap
        x, y = 8 + 44 * (k % 2) + rng.randint(0, 6), 8 + 44 * (k // 2) + rng.randint(0, 6)
        size = rng.randint(22, 30)
        if shape == "circle":
            draw.ellipse((x, y, x + size, y + size), fill=rgb)
        elif shape == "square":
            draw.rectangle((x, y, x + size, y + size), fill=rgb)
        else:
            draw.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=rgb)
    plural = shape + ("s" if count > 1 else "")
    messages = [user(name, rng.choice(["How many shapes are in the picture, and what are they?",
                                       "Count the shapes in this image."])),
                say("assistant", f"{NUMBER_WORDS[count].capitalize()} {colour} {plural}."),
                say("user", "它们是什么颜色？"),
                say("assistant", f"{colour_zh}，都是{SHAPES[shape]}。")]
    return image, messages


def bars(rng: random.Random, name: str):
    image = Image.new("RGB", (128, 96), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=11)
    values = rng.sample(range(1, 10), 3)  # distinct, so "tallest" has one answer
    labels = ["A", "B", "C"]
    draw.line((10, 80, 120, 80), fill="black")
    for k, (label, value) in enumerate(zip(labels, values)):
        x = 20 + 35 * k
        draw.rectangle((x, 80 - 7 * value, x + 20, 80), fill=(70, 110, 200))
        draw.text((x + 6, 82), label, fill="black", font=font)
    tallest, shortest = labels[values.index(max(values))], labels[values.index(min(values))]
    messages = [user(name, "Which bar is the tallest?"),
                say("assistant", f"Bar {tallest} is the tallest, at {max(values)}."),
                say("user", "最短的是哪一个？"),
                say("assistant", f"最短的是 {shortest}，数值是 {min(values)}。")]
    return image, messages


def words(rng: random.Random, name: str):
    image = Image.new("RGB", (128, 64), "white")
    draw = ImageDraw.Draw(image)
    word = rng.choice(WORDS)
    draw.text((10, 18), word, fill="black", font=ImageFont.load_default(size=rng.choice([20, 24])))
    question = rng.choice(["What is written in the image?", "图片上写的是什么？"])
    answer = f'It says "{word}".' if question.isascii() else f"上面写的是“{word}”。"
    return image, [user(name, question), say("assistant", answer)]


def hanzi(rng: random.Random, name: str):
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    char = rng.choice(list(HANZI))
    width = rng.randint(4, 6)
    if char == "十":
        draw.rectangle((10, 30, 54, 30 + width), fill="black")
        draw.rectangle((30, 8, 30 + width, 56), fill="black")
    else:
        n = "一二三".index(char) + 1
        for k in range(n):  # n horizontal strokes, the lowest the longest, as in handwriting
            y = 32 if n == 1 else 14 + k * (36 // (n - 1))
            draw.rectangle((16 - 4 * (k == n - 1), y, 48 + 4 * (k == n - 1), y + width), fill="black")
    answer = f"是“{char}”，意思是 {HANZI[char]}。"
    return image, [user(name, "图中写的是哪个汉字？"), say("assistant", answer)]


def main():
    rng = random.Random(2026)
    shutil.rmtree(OUT / "images", ignore_errors=True)
    (OUT / "images").mkdir(parents=True)
    train, test = [], []
    for kind in (shapes, bars, words, hanzi):
        for k in range(PER_KIND):
            name = f"images/{kind.__name__}_{k:02d}.png"
            image, messages = kind(rng, name)
            # A palette PNG: these pictures have a handful of colours, so each file is about 1 KB.
            image.quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                OUT / name, optimize=True)
            (test if k < HELD_OUT else train).append({"messages": messages})
    rng.shuffle(train)
    # Held-out rows kind by kind in turn, so the recipe's first 3 eval prompts show 3 kinds of picture.
    test = [test[kind * HELD_OUT + k] for k in range(HELD_OUT) for kind in range(len(test) // HELD_OUT)]
    for split, rows in (("train", train), ("test", test)):
        (OUT / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                             encoding="utf-8")
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT}: {len(train)} train rows, {len(test)} test rows, {len(train) + len(test)} images, "
          f"{size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
