"""Deterministic variants of a hand-written corpus ticket: how the same ticket arrives in a real inbox.

Every variant keeps the ticket's labels, so each change is one a triager would not re-label for: a greeting
or a signature, missing accents, a typo or two, lower case, an English subject over a foreign body, an emoji
that matches the mood. Shouting is only added to tickets already labelled angry. The hand-written texts stay
the substance; this only teaches the model that the wrapping does not matter.
"""
from __future__ import annotations

import random
import unicodedata
from typing import Iterator

GREETINGS = {
    "en": ["Hi,", "Hello,", "Hi team,", "Dear support,", "Good morning,", "Hey,"],
    "es": ["Hola,", "Buenos días,", "Buenas tardes,", "Estimado equipo:", "Hola equipo,"],
    "fr": ["Bonjour,", "Bonjour à tous,", "Madame, Monsieur,", "Salut,", "Bonsoir,"],
    "de": ["Hallo,", "Guten Tag,", "Sehr geehrte Damen und Herren,", "Hallo zusammen,", "Moin,"],
    "ja": ["お世話になっております。", "こんにちは。", "お疲れ様です。", "いつもお世話になっております。"],
}
SIGNATURES = {
    "en": ["Thanks,\nJordan", "Regards,\nSam Patel\nIT Manager", "Best,\nAlex", "Cheers,\nK.",
           "Sent from my iPhone", "Thanks in advance,\nLee Morgan | Operations"],
    "es": ["Saludos,\nCarmen", "Un saludo,\nJavier López\nDpto. IT", "Gracias de antemano,\nAna",
           "Enviado desde mi móvil", "Atentamente,\nLuis"],
    "fr": ["Cordialement,\nPierre", "Bien à vous,\nSophie Martin\nDSI", "Merci d'avance,\nLuc",
           "Envoyé de mon iPhone", "Bonne journée,\nClaire"],
    "de": ["Viele Grüße\nJonas", "Mit freundlichen Grüßen\nSabine Koch\nIT-Leitung", "Danke vorab,\nTim",
           "Von meinem iPhone gesendet", "Beste Grüße\nLena"],
    "ja": ["よろしくお願いいたします。\n佐藤", "以上、よろしくお願いします。", "株式会社みらい 情報システム部 田中",
           "iPhoneから送信", "お手数ですがよろしくお願いします。"],
}
# An English subject over a foreign body is common (a form's default, a colleague's forward); the language
# label stays the body's.
ENGLISH_SUBJECTS = ["Support request", "Help", "Question", "Issue", "Urgent", "Re: your ticket",
                    "Fwd: problem", "Request", "(no subject)", "Ticket"]
EMOJI = {"angry": ["😡", "🤬", "😤", "👎"], "satisfied": ["😊", "🙏", "👍", "🙌", "❤️"],
         "neutral": ["🙂", "😅", "🙏"]}


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def _typos(text: str, rng: random.Random, n: int) -> str:
    """``n`` keyboard slips in Latin words: a swapped pair, a dropped or a doubled letter."""
    chars = list(text)
    spots = [i for i in range(1, len(chars) - 1) if chars[i].isascii() and chars[i].isalpha()
             and chars[i + 1].isascii() and chars[i + 1].isalpha()]
    for i in sorted(rng.sample(spots, min(n, len(spots))), reverse=True):
        kind = rng.randrange(3)
        if kind == 0:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == 1:
            del chars[i]
        else:
            chars.insert(i, chars[i])
    return "".join(chars)


def variants(ticket: dict, count: int, seed: int) -> Iterator[tuple[str, str]]:
    """``count`` (subject, body) variants of one ticket (language, sentiment ... in ``ticket``), the same for the
    same seed. The first is the ticket as written."""
    rng = random.Random(seed)
    lang, subject, body = ticket["language"], ticket["subject"], ticket["body"]
    yield subject, body
    for k in range(1, count):
        s, b = subject, body
        if rng.random() < 0.5:
            b = f"{rng.choice(GREETINGS[lang])}\n{b}"
        if rng.random() < 0.5:
            b = f"{b}\n\n{rng.choice(SIGNATURES[lang])}"
        if lang != "ja" and rng.random() < 0.4:
            b = _strip_accents(b)
            s = _strip_accents(s)
        if lang != "ja" and rng.random() < 0.5:
            b = _typos(b, rng, rng.randint(1, 3))
        if rng.random() < 0.25:
            b, s = b.lower(), s.lower()
        if ticket["sentiment"] == "angry" and lang != "ja" and rng.random() < 0.2:
            b = b.upper()
        if rng.random() < 0.2:
            b = f"{b} {rng.choice(EMOJI[ticket['sentiment']])}"
        roll = rng.random()
        if roll < 0.15:
            s = ""
        elif roll < 0.35 and lang != "en":
            s = rng.choice(ENGLISH_SUBJECTS)
        yield s, b
