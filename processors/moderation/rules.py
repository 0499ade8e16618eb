"""The offline moderation models: deterministic rules over words and URLs, microseconds per call.

They stand where a hosted moderation model would (each check may name a model chain instead); what they
return is the shape every check returns: ``{"ok": bool, "score": 0..1, "reasons": [...]}``.
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

_WORD = re.compile(r"[\w']+", re.UNICODE)

# Insults and threats, in the four languages of the sample. A score is the share of the post's sentences that
# carry one, so one rude word in a long post scores less than a post that is all abuse.
TOXIC = {
    "idiot", "idiots", "moron", "morons", "stupid", "loser", "losers", "pathetic", "worthless", "shut up",
    "kill you", "hurt you", "i will find you", "you deserve to die", "go die",
    "dummkopf", "idiotin", "halt die klappe", "ich bring dich um",
    "imbécile", "crétin", "ta gueule", "je vais te tuer",
    "imbécil", "estúpido", "cállate", "te voy a matar",
}
# Dehumanising speech about a group: the pattern, not a list of slurs.
HATE = [
    re.compile(r"\b(those|these|all)\s+(people|immigrants|foreigners|\w+s)\s+(are|is)\s+(vermin|animals|rats|"
               r"parasites|subhuman|a disease)\b"),
    re.compile(r"\b(should|must|ought to)\s+be\s+(exterminated|wiped out|eradicated|gassed|deported all)\b"),
    re.compile(r"\bgo back to (where|your) (you came from|country)\b"),
    re.compile(r"\b(die|sterben|mourir|morir)\s+(alle|tous|todos)\b"),
]
UNSAFE_IMAGE = {
    "gore": "graphic violence", "blood everywhere": "graphic violence", "corpse": "graphic violence",
    "decapitated": "graphic violence", "mutilated": "graphic violence", "nude": "nudity", "naked": "nudity",
    "explicit": "sexual content", "self-harm": "self-harm", "cutting wrists": "self-harm",
    "holding a gun to": "threat with a weapon", "pointing a rifle at": "threat with a weapon",
    "swastika": "hate symbol",
}
BAD_DOMAINS = {"free-gift-cards.example", "login-verify-account.example", "crypto-double.example",
               "malware.test", "phish.test"}
SHORTENERS = {"bit.ly", "tinyurl.com", "t.co", "goo.gl", "is.gd", "ow.ly"}
RISKY_TLDS = {"zip", "mov", "xyz", "top", "click", "gq", "tk"}
LURE_WORDS = ("login", "verify", "wallet", "free-", "giveaway", "account-update", "secure-")


def _fold(text: str) -> str:
    # NFKC and casefold: a full-width or styled letter is the letter it looks like.
    return unicodedata.normalize("NFKC", text).casefold()


def toxicity(text: str) -> dict[str, object]:
    folded = _fold(text)
    sentences = [s for s in re.split(r"[.!?\n]+", folded) if s.strip()] or [""]
    hits = sorted({t for t in TOXIC if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", folded)})
    flagged = sum(1 for s in sentences if any(re.search(rf"(?<!\w){re.escape(t)}(?!\w)", s) for t in TOXIC))
    score = round(min(1.0, flagged / len(sentences) + (0.5 if any(" " in h for h in hits) else 0.0)), 3)
    return {"ok": score < 0.3, "score": score, "reasons": [f"toxic: {h}" for h in hits]}


def hate_speech(transcript: str) -> dict[str, object]:
    folded = _fold(transcript)
    found = [m.group(0) for p in HATE for m in p.finditer(folded)]
    return {"ok": not found, "score": 1.0 if found else 0.0, "reasons": [f"hate speech: {f}" for f in found]}


def image_safety(description: str) -> dict[str, object]:
    folded = _fold(description)
    found = sorted({why for term, why in UNSAFE_IMAGE.items() if term in folded})
    return {"ok": not found, "score": 1.0 if found else 0.0, "reasons": found}


def link_reputation(urls: list[str]) -> dict[str, object]:
    reasons: list[str] = []
    for url in urls:
        why = _bad_link(url)
        if why:
            reasons.append(f"{url[:200]}: {why}")
    return {"ok": not reasons, "score": round(min(1.0, len(reasons) / max(1, len(urls))), 3), "reasons": reasons}


def _bad_link(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip() if "://" in url else "http://" + url.strip())
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return "not a URL"
    if not host:
        return "not a URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r}"
    if host.startswith("xn--") or ".xn--" in host:
        return "punycode host (a look-alike of another name?)"
    try:
        ipaddress.ip_address(host)
        return "an address, not a name"
    except ValueError:
        pass
    if host in BAD_DOMAINS or any(host.endswith("." + d) for d in BAD_DOMAINS):
        return "known bad domain"
    if host in SHORTENERS:
        return "a shortener hides where it leads"
    if host.rsplit(".", 1)[-1] in RISKY_TLDS:
        return f"risky top-level domain .{host.rsplit('.', 1)[-1]}"
    if any(w in host for w in LURE_WORDS):
        return "a lure word in the host name"
    return None
