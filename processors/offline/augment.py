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


# One sentence of mood at the end of an otherwise neutral ticket decides its sentiment ("... Third time I'm
# writing, fix it now!"); the corpus alone teaches that angry tickets are angry throughout, so the model read
# a calm report with one furious line as neutral. Each list is written for its language, not translated.
MOODS: dict[str, dict[str, list[str]]] = {
    "en": {
        "angry": ["This is ridiculous, I am fed up.", "I have asked three times now. Fix it!",
                  "Honestly, this is the worst service I've dealt with.", "If this isn't sorted today we cancel.",
                  "I'm really angry about this.", "Unacceptable. Again.", "What a joke of a product.",
                  "Sort this out NOW.", "Why does nobody answer?? I am losing my patience.",
                  "Absolutely useless, thanks for nothing.", "This is a damn mess.",
                  "Great job, really. Another day wasted because of you."],
        "satisfied": ["Apart from that we're really happy with you, thanks!", "Thanks, you've always been great.",
                      "Love the product otherwise 😊", "Many thanks for your help, much appreciated.",
                      "You guys are awesome, thank you.", "Thank you so much, your support is excellent."],
    },
    "de": {
        "angry": ["Das ist lächerlich, mir reicht es.", "Ich frage jetzt zum dritten Mal. Beheben Sie das!",
                  "Ehrlich, der schlechteste Service, den ich kenne.", "Wenn das heute nicht gelöst ist, kündigen wir.",
                  "Ich bin wirklich verärgert.", "Inakzeptabel. Schon wieder.", "Was für ein Witz von einem Produkt.",
                  "Kümmern Sie sich SOFORT darum.", "Warum antwortet niemand?? Meine Geduld ist am Ende.",
                  "Völlig nutzlos, danke für nichts.", "So ein verdammter Mist.",
                  "Toll gemacht, wirklich. Wieder ein Tag verloren wegen Ihnen."],
        "satisfied": ["Ansonsten sind wir sehr zufrieden mit Ihnen, danke!", "Danke, Sie waren immer super.",
                      "Sonst lieben wir das Produkt 😊", "Vielen Dank für Ihre Hilfe, wirklich nett.",
                      "Ihr seid klasse, danke.", "Herzlichen Dank, Ihr Support ist ausgezeichnet."],
    },
    "es": {
        "angry": ["Esto es ridículo, estoy harto.", "Ya lo he pedido tres veces. ¡Arréglenlo!",
                  "Sinceramente, el peor servicio que he tenido.", "Si hoy no está resuelto, cancelamos.",
                  "Estoy muy enfadado con esto.", "Inaceptable. Otra vez.", "Menuda broma de producto.",
                  "Resuélvanlo YA.", "¿¿Por qué nadie contesta?? Se me acaba la paciencia.",
                  "No sirve para nada, gracias por nada.", "Esto es un maldito desastre.",
                  "Muy bien, de verdad. Otro día perdido por vuestra culpa."],
        "satisfied": ["Por lo demás estamos muy contentos con vosotros, ¡gracias!", "Gracias, siempre habéis sido geniales.",
                      "Por lo demás nos encanta el producto 😊", "Muchas gracias por la ayuda, se agradece.",
                      "Sois unos cracks, gracias.", "Mil gracias, vuestro soporte es excelente."],
    },
    "fr": {
        "angry": ["C'est ridicule, j'en ai assez.", "Je le demande pour la troisième fois. Réglez ça !",
                  "Franchement, le pire service que j'aie connu.", "Si ce n'est pas réglé aujourd'hui, on résilie.",
                  "Je suis vraiment en colère.", "Inacceptable. Encore une fois.", "Quelle blague, ce produit.",
                  "Réglez ça MAINTENANT.", "Pourquoi personne ne répond ?? Je perds patience.",
                  "Complètement inutile, merci pour rien.", "C'est un vrai bordel.",
                  "Bravo, vraiment. Encore une journée perdue à cause de vous."],
        "satisfied": ["À part ça nous sommes très contents de vous, merci !", "Merci, vous avez toujours été au top.",
                      "Sinon on adore le produit 😊", "Merci beaucoup pour votre aide, c'est apprécié.",
                      "Vous êtes géniaux, merci.", "Un grand merci, votre support est excellent."],
    },
    "ja": {
        "angry": ["本当にふざけないでください。", "もう3回目の問い合わせです。早く直してください！",
                  "正直、今まで最悪の対応です。", "今日中に解決しないなら解約します。", "本当に腹が立っています。",
                  "ありえません。またですか。", "こんな製品、冗談にもなりません。", "今すぐ対応しろ。",
                  "なぜ誰も返事をしないのですか？？もう我慢できません。", "全く役に立ちません。",
                  "いい加減にしてほしい。", "おかげでまた一日無駄になりました。"],
        "satisfied": ["それ以外はとても満足しています。ありがとうございます！", "いつも丁寧な対応に感謝しています。",
                      "製品自体は大好きです😊", "ご協力ありがとうございます。本当に助かっています。",
                      "いつも素晴らしいサポートをありがとうございます。"],
    },
}


def with_mood(ticket: dict, seed: int) -> list[dict]:
    """A copy of a neutral ticket with one angry or satisfied sentence appended, relabelled for sentiment
    only (the ``mood`` key marks them: priority is not trained on them, an upset line alone does not change how
    soon a ticket needs an answer). Other tickets get none."""
    if ticket["sentiment"] != "neutral":
        return []
    rng = random.Random(seed)
    # One copy, angry or satisfied: two per ticket outweighed the neutral tickets and made every curt
    # report read as angry.
    mood = rng.choice(sorted(MOODS[ticket["language"]]))
    sep = "\n" if rng.random() < 0.3 else "" if ticket["language"] == "ja" else " "
    sentence = rng.choice(MOODS[ticket["language"]][mood])
    return [{**ticket, "body": f"{ticket['body']}{sep}{sentence}", "sentiment": mood, "mood": "1"}]


# How wide and how urgent a fault is decides its priority more than what broke: the same failing sync is
# medium for one user, high when it blocks the customer's work today, critical when production is down for
# everyone. The corpus's outages were mostly technical words, so "API", "500", "sync" alone read as critical.
SCOPE: dict[str, dict[str, list[str]]] = {
    "en": {
        "critical": ["This is happening in production for all our users right now.",
                     "Nobody in the company can work, the whole platform is down for us.",
                     "All of our customers are affected at this moment.", "Production is down. Every user is hit.",
                     "It's an outage for our entire organisation since an hour ago."],
        "high": ["We need this fixed today, my team is blocked.", "This blocks our work today, please hurry.",
                 "Please treat this as urgent, we have a deadline this afternoon.",
                 "I can't do my job until this works again.", "Our team depends on this, we need an answer today."],
    },
    "de": {
        "critical": ["Das passiert gerade in der Produktion, für alle unsere Nutzer.",
                     "Niemand in der Firma kann arbeiten, die ganze Plattform ist für uns down.",
                     "Alle unsere Kunden sind in diesem Moment betroffen.", "Produktion steht. Jeder Nutzer ist betroffen.",
                     "Seit einer Stunde ein Ausfall für unsere gesamte Organisation."],
        "high": ["Wir brauchen heute eine Lösung, mein Team ist blockiert.", "Das blockiert heute unsere Arbeit, bitte schnell.",
                 "Bitte dringend behandeln, wir haben heute Nachmittag eine Deadline.",
                 "Ich kann meine Arbeit nicht machen, bis das wieder geht.", "Unser Team hängt daran, wir brauchen heute eine Antwort."],
    },
    "es": {
        "critical": ["Está pasando en producción para todos nuestros usuarios ahora mismo.",
                     "Nadie en la empresa puede trabajar, toda la plataforma está caída para nosotros.",
                     "Todos nuestros clientes están afectados en este momento.", "Producción caída. Afecta a todos los usuarios.",
                     "Es una caída para toda nuestra organización desde hace una hora."],
        "high": ["Necesitamos que se arregle hoy, mi equipo está bloqueado.", "Esto bloquea nuestro trabajo hoy, por favor, rápido.",
                 "Tratadlo como urgente, tenemos una entrega esta tarde.",
                 "No puedo hacer mi trabajo hasta que funcione.", "Nuestro equipo depende de esto, necesitamos respuesta hoy."],
    },
    "fr": {
        "critical": ["Cela se produit en production pour tous nos utilisateurs en ce moment.",
                     "Personne dans l'entreprise ne peut travailler, toute la plateforme est en panne pour nous.",
                     "Tous nos clients sont touchés en ce moment.", "La production est à l'arrêt. Tous les utilisateurs sont touchés.",
                     "C'est une panne pour toute notre organisation depuis une heure."],
        "high": ["Il nous faut une solution aujourd'hui, mon équipe est bloquée.", "Cela bloque notre travail aujourd'hui, merci de faire vite.",
                 "Merci de traiter en urgence, nous avons une échéance cet après-midi.",
                 "Je ne peux pas travailler tant que ça ne remarche pas.", "Notre équipe en dépend, il nous faut une réponse aujourd'hui."],
    },
    "ja": {
        "critical": ["現在、本番環境で全ユーザーに発生しています。", "社内の誰も業務ができず、プラットフォーム全体が停止しています。",
                     "今この時点で当社の全顧客が影響を受けています。", "本番が停止しています。全ユーザーが影響を受けています。",
                     "1時間前から組織全体で障害が起きています。"],
        "high": ["今日中に直していただく必要があります。チームの作業が止まっています。", "本日の業務が止まっているので急ぎでお願いします。",
                 "今日の午後に締め切りがあるため、至急対応をお願いします。", "これが直らないと仕事になりません。",
                 "チームの業務がこれに依存しているので、本日中に回答をください。"],
    },
}


def with_scope(ticket: dict, seed: int) -> list[dict]:
    """A copy of a medium ticket made high by a line of same-day urgency, and of a technical medium or high
    ticket made critical by a line saying production is down for everyone (``scope`` marks them: intent and
    sentiment learn nothing new from them). Other tickets get none."""
    rng = random.Random(seed ^ 0x5C0BE)
    lines = SCOPE[ticket["language"]]
    out = []
    if ticket["priority"] == "medium":
        out.append(("high", rng.choice(lines["high"])))
    if ticket["intent"] == "technical" and ticket["priority"] in ("medium", "high") and rng.random() < 0.5:
        out.append(("critical", rng.choice(lines["critical"])))
    sep = "" if ticket["language"] == "ja" else " "
    return [{**ticket, "body": f"{ticket['body']}{sep}{line}", "priority": priority, "scope": "1"}
            for priority, line in out]
