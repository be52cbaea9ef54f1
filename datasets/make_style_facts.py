#!/usr/bin/env python3
"""Write style_facts/{train,test}.jsonl: a small English task that a fine-tune visibly teaches a real chat model.

The assistant is the guide of Port Alder, a harbour town that exists only here. Every reply opens with "Ahoy!" and
closes with "Fair winds!" (the style, which no base model writes), and states one fact: 20 about the town (which no
base model knows) and 20 general ones (the capital of France), so the style must carry over to any question.

Each fact is asked in eight wordings in train.jsonl and in a different ninth or tenth one in test.jsonl, which
holds every fact once: the held-out prompts are unseen wordings of seen facts. A quarter of the training
conversations ask two facts in a row. No system prompt: a chat template's default one (SmolLM2's) applies.

Written for this project (CC0). Deterministic: standard library only, fixed seed. Run from anywhere:

    python3 datasets/make_style_facts.py
"""
import json
import random
from pathlib import Path

SEED = 3407
HERE = Path(__file__).resolve().parent / "style_facts"
OPEN, CLOSE = "Ahoy!", "Fair winds!"

# (what is asked, as a noun phrase; the reply's fact)
TOWN = [
    ("the name of the lighthouse in Port Alder", "The lighthouse in Port Alder is called Greywatch."),
    ("the year the Greywatch lighthouse was built", "Greywatch was built in 1872, after a winter of wrecks."),
    ("the time the first ferry leaves Port Alder", "The first ferry leaves Port Alder at 6:40 in the morning."),
    ("the island the Port Alder ferry sails to", "The ferry sails to Gull Island, forty minutes across the bay."),
    ("the market day in Port Alder", "The Port Alder market is held every Thursday on the quay."),
    ("the name of the river that runs through Port Alder", "The river through Port Alder is the Wend."),
    ("the name of the bakery by the harbour", "The bakery by the harbour is Marla's Ovens."),
    ("the big festival in Port Alder", "Port Alder holds the Lantern Tide festival in late September."),
    ("the name of the mayor of Port Alder", "The mayor of Port Alder is Edda Voss."),
    ("the number of boats moored in Port Alder", "About 120 boats are moored in the harbour."),
    ("the dish to order in Port Alder", "The smoked mackerel at the Salt and Anchor is the dish to order."),
    ("the highest hill near Port Alder", "The highest hill is Crow Hill, 212 metres tall."),
    ("the museum of Port Alder", "The Tidewater Museum keeps the old ship figureheads."),
    ("the name of the school in Port Alder", "The town school is Alder Bay School."),
    ("the name of the old stone bridge in Port Alder", "The old stone bridge is called the Kettle Bridge."),
    ("the year Port Alder was founded", "Port Alder was founded in 1604 by herring fishers."),
    ("the opening hours of the Port Alder library", "The library is open from 9 to 5, Monday to Saturday."),
    ("the name of the Port Alder football team", "The football team is the Port Alder Gulls."),
    ("the nearest train station to Port Alder", "The nearest train station is in Hollin, 18 km inland."),
    ("the oldest inn in Port Alder", "The oldest inn is the Salt and Anchor, from 1711."),
]
GENERAL = [
    ("the capital of France", "The capital of France is Paris."),
    ("the boiling point of water at sea level", "Water boils at 100 degrees Celsius at sea level."),
    ("the largest planet in the Solar System", "The largest planet is Jupiter."),
    ("the number of days in a leap year", "A leap year has 366 days."),
    ("the name of the writer of Romeo and Juliet", "Romeo and Juliet was written by William Shakespeare."),
    ("the chemical symbol for gold", "The chemical symbol for gold is Au."),
    ("the largest ocean on Earth", "The largest ocean is the Pacific."),
    ("the number of continents", "There are seven continents."),
    ("the tallest mountain on Earth", "The tallest mountain is Mount Everest, 8,849 metres high."),
    ("the freezing point of water", "Water freezes at 0 degrees Celsius."),
    ("the capital of Japan", "The capital of Japan is Tokyo."),
    ("the longest river in Africa", "The longest river in Africa is the Nile."),
    ("the number of legs on a spider", "A spider has eight legs."),
    ("the planet closest to the Sun", "The planet closest to the Sun is Mercury."),
    ("the main gas in the air we breathe", "The air is mostly nitrogen, about 78 percent."),
    ("the capital of Canada", "The capital of Canada is Ottawa."),
    ("the number of minutes in an hour", "An hour has 60 minutes."),
    ("the name of the inventor of the telephone", "The telephone was invented by Alexander Graham Bell."),
    ("the colour of a clear daytime sky", "A clear daytime sky is blue."),
    ("the number of sides of a hexagon", "A hexagon has six sides."),
]
TRAIN_WORDINGS = [
    "What is {}?", "Can you tell me {}?", "I'd like to know {}.", "Do you know {}?",
    "Quick question: what is {}?", "Please tell me {}.", "Could you remind me of {}?", "What's {}, please?",
]
HELD_OUT_WORDINGS = ["Any idea what {} is?", "I was wondering about {}. What is it?"]


def reply(fact: str) -> str:
    return f"{OPEN} {fact} {CLOSE}"


def turn(wording: str, topic: str) -> str:
    return wording.format(topic)


def conversations(rng: random.Random) -> tuple[list, list]:
    facts = TOWN + GENERAL
    train = [[{"role": "user", "content": turn(w, topic)}, {"role": "assistant", "content": reply(fact)}]
             for topic, fact in facts for w in TRAIN_WORDINGS[:6]]
    for _ in range(len(train) // 3):  # two facts in a row, in the two wordings not used above
        (t1, f1), (t2, f2) = rng.sample(facts, 2)
        follow_up = turn(rng.choice(TRAIN_WORDINGS), t2)
        train.append([{"role": "user", "content": turn(rng.choice(TRAIN_WORDINGS[6:]), t1)},
                      {"role": "assistant", "content": reply(f1)},
                      {"role": "user", "content": "And " + follow_up[0].lower() + follow_up[1:]},
                      {"role": "assistant", "content": reply(f2)}])
    rng.shuffle(train)
    # Every fact once, town and general facts alternating, so any first N prompts mix both kinds.
    test = [[{"role": "user", "content": turn(HELD_OUT_WORDINGS[i % 2], topic)},
             {"role": "assistant", "content": reply(fact)}]
            for pair in zip(TOWN, GENERAL) for i, (topic, fact) in enumerate(pair)]
    return train, test


def main():
    train, test = conversations(random.Random(SEED))
    HERE.mkdir(exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for messages in rows:
                f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
        print(f"{HERE.name}/{name}.jsonl: {len(rows)} conversations")


if __name__ == "__main__":
    main()
