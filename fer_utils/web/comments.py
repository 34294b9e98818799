"""Feedback comments shown with a prediction, one chosen at random per result, in Korean and English.

Keyed by the canonical class names of :data:`fer_utils.labels.EMOTIONS` (the original site's
list followed another order and showed wrong labels: here nothing depends on an order).
"""
from __future__ import annotations

import random

from fer_utils.labels import EMOTIONS, KOREAN

COMMENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "ko": {
        "surprise": ("깜짝 놀라셨나요? 무슨 일이 있었는지 궁금해요!", "놀라운 순간을 포착했어요.",
                     "예상 밖의 일이 생겼나 봐요."),
        "fear": ("걱정되는 일이 있나요? 잠시 숨을 고르세요.", "괜찮아요, 천천히 해도 돼요.",
                 "불안할 땐 믿을 만한 사람과 이야기해 보세요."),
        "disgust": ("뭔가 마음에 들지 않으셨나 봐요.", "불쾌한 일은 빨리 잊어버려요.",
                    "싫은 건 싫다고 말해도 괜찮아요."),
        "happiness": ("행복해 보여요! 좋은 하루 보내세요.", "웃는 얼굴이 멋져요!",
                      "그 기분 오래오래 간직하세요."),
        "sadness": ("힘든 하루였나요? 따뜻한 차 한잔 어때요?", "슬플 땐 쉬어 가도 괜찮아요.",
                    "당신의 마음을 응원해요."),
        "anger": ("화가 나셨나요? 깊게 한번 숨 쉬어 봐요.", "잠깐 산책하며 마음을 가라앉혀 보세요.",
                  "화날 만한 일이 있었나 봐요."),
        "neutral": ("차분한 표정이네요.", "평온한 하루를 보내고 계시군요.", "담담한 모습이에요."),
    },
    "en": {
        "surprise": ("Surprised? Something unexpected must have happened!", "A moment of surprise, caught.",
                     "That looks like news you did not see coming."),
        "fear": ("Something worrying? Take a slow breath.", "It is all right to take your time.",
                 "When anxious, talk to someone you trust."),
        "disgust": ("Something did not sit well with you.", "Let the unpleasant thing go.",
                    "It is fine to say you do not like it."),
        "happiness": ("You look happy! Have a great day.", "What a smile!", "Keep that feeling for long."),
        "sadness": ("A hard day? How about a warm cup of tea?", "It is fine to rest when you are sad.",
                    "Sending you some encouragement."),
        "anger": ("Angry? Try one deep breath.", "A short walk may help you calm down.",
                  "Something must have annoyed you."),
        "neutral": ("A calm expression.", "Looks like a peaceful day.", "Composed and steady."),
    },
}

LABELS: dict[str, dict[str, str]] = {"ko": dict(KOREAN), "en": {name: name for name in EMOTIONS}}
"""The class names shown in each language."""


def comment(label: str, lang: str, rng: random.Random | None = None) -> str:
    """A comment for ``label`` in ``lang`` (``ko`` or ``en``), chosen at random."""
    return (rng or random).choice(COMMENTS[lang][label])


def label_name(label: str, lang: str) -> str:
    return LABELS[lang][label]
