"""The offline provider's multilingual lexicons: data only, no logic.

Why these words: they are the general-domain vocabulary a support team writes and reads every day
("refund", "reembolso", "remboursement", "Rückerstattung", "返金"; "password", "contraseña" ...), in
the five languages the project serves (en, es, fr, de, ja). They are words, stems and short phrases,
never whole ticket texts or ids, so they carry over to tickets nobody has seen. The sample tickets were
only read to check that the everyday vocabulary is covered.

Term syntax (compiled by :mod:`processors.offline.matching`): lowercase; a Latin term matches at the
start of a word and as a prefix ("refund" also hits "refunded"); a trailing ``$`` makes it a whole
word; CJK terms match anywhere. A weight of 0 marks a phrase that must *not* count for the word inside
it ("would be great" is a request, not praise). Each term appears once per lexicon.
"""
from __future__ import annotations

LANGUAGES = ("en", "es", "fr", "de", "ja")

# --- language -----------------------------------------------------------------------------------
# Function words: frequent, topic-free, and different enough between the Latin languages to vote.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("""the a an and or is are was were be been my our your we you i it this that to of
        for on in at with from after before not no do does did how what when why who which can cannot
        please there have has had will would should could me us they them his her its than then just
        since every all any still about into over under""".split()),
    "es": frozenset("""el la los las un una unos unas y o es son está están fue mi mis su sus nuestro
        nuestra nuestros de del que en con por para como cómo cuál cuándo qué no nunca todas todos este
        esta estos me se lo le les al desde durante hasta pero muy también ya hay dos veces favor""".split()),
    "fr": frozenset("""le la les un une des du de et ou est sont été mon ma mes ton votre vos notre nos
        je tu il elle nous vous ils pour par avec sans dans sur au aux ce cette ces que qui ne pas rien
        plus tout toute toutes tous depuis merci fois deux mais très aussi déjà ai avons""".split()),
    "de": frozenset("""der die das den dem des ein eine einen einem einer und oder ist sind war wurde
        wurden mein meine mir mich ich wir uns sie ihr ihre ihren wie was wann warum nicht nie kein keine
        zum zur nach mit von für auf über bei aus hat haben kommt diesen dieser dieses bitte auch noch
        schon sehr""".split()),
}
# Letters that only (or mostly) one of the Latin languages uses; é is shared by es/fr and so absent.
DIACRITICS: dict[str, str] = {
    "es": "ñ¿¡áíóú",
    "fr": "èêëàâçùûôîïœ",
    "de": "äöüß",
}

# Languages we do NOT serve, known only so the classifier can say "not one of ours" instead of picking the
# nearest served language (Italian and Portuguese read as Spanish or French otherwise). Their votes never
# become a served label; words shared with a served language vote for both, and the margin decides.
UNSERVED_STOPWORDS: dict[str, frozenset[str]] = {
    "it": frozenset("""il lo gli della dello delle degli dei nel nella nei sul sulla alla alle al di da
        dal dalla che non per con è sono mio mia miei mie ho hai ha abbiamo questo questa questi quello
        quella ma anche già più molto come quando perché grazie ancora sempre mai ogni volte ieri oggi
        vostro vostra nostro nostra mi ci vi si sia stato stata""".split()),
    "pt": frozenset("""o os um uma uns umas do da dos das em no na nos nas não é são está estão foi meu
        minha meus minhas seu sua nosso nossa com por para como quando porque mas muito também já há
        obrigado obrigada você vocês ele ela isso este esta esse essa ao aos pelo pela pelos pelas
        ainda sempre nunca duas vezes ontem hoje foram tenho temos""".split()),
    "nl": frozenset("""de het een en of is zijn was werd mijn ons onze uw jullie wij ik je het van voor
        op in met aan bij uit niet geen ook nog al wel heel naar dat die deze dit hoe wat wanneer waarom
        graag bedankt alstublieft twee keer gisteren vandaag""".split()),
}
UNSERVED_DIACRITICS: dict[str, str] = {
    "it": "ìò",
    "pt": "ãõ",
}

# --- intent -------------------------------------------------------------------------------------
INTENT: dict[str, dict[str, float]] = {
    "billing": {
        # money back / charges
        "refund": 3, "reembols": 3, "rembours": 3, "rückerstatt": 3, "erstatt": 2.5, "返金": 3,
        "devuélv": 2.5, "devolución": 2.5,
        "charge": 2, "billed$": 2, "bill$": 1.5, "billing": 2, "cobr": 3, "cargo": 2, "abbuchung": 3,
        "berechnet": 2, "請求": 3, "二重": 1,
        "overage": 3, "fee$": 2, "fees$": 2, "frais": 2, "gebühr": 2, "quota": 0.5,
        # documents
        "invoice": 3, "receipt": 2, "factur": 3, "rechnung": 3, "recibo": 2, "vat$": 2, "iva$": 2,
        "tva$": 2, "mwst": 2, "ust-id": 2, "領収書": 3, "インボイス": 3,
        # payment and plans
        "payment": 2, "paiement": 2, "pago": 2, "zahlung": 2, "支払": 2, "決済": 2,
        "card$": 1.5, "credit card": 2, "tarjeta": 1.5, "carte bancaire": 2, "kreditkarte": 2,
        "カード": 1.5, "declined": 1, "renew": 1.5,
        "price": 2, "pricing": 2, "precio": 2, "prix$": 2, "tarif": 2, "preis": 2, "料金": 2,
        "prorat": 3, "prorrat": 3, "anteilig": 3, "日割": 3, "upgrade": 1.5, "downgrade": 1.5,
        "subscription": 1.5, "suscripci": 1.5, "abonnement": 1.5, "abo$": 1.5, "サブスクリプション": 1.5,
        "trial": 1.5, "plan$": 0.5, "プラン": 0.5, "montant": 1.5, "importe": 1.5, "betrag": 1.5,
        "discount": 2, "descuento": 2, "remise$": 2, "rabatt": 2, "割引": 2,
    },
    "technical": {
        "crash": 3, "stürz": 3, "absturz": 3, "plante$": 2, "se cierra": 2, "クラッシュ": 3,
        "error": 2, "erreur": 2, "fehler": 2, "エラー": 2, "bug$": 2, "bugs$": 2, "exception": 2,
        "api": 2, "endpoint": 2, "http$": 1.5, "5xx$": 2, "timeout": 2, "time out": 2, "latency": 2,
        "sync": 3, "synchron": 3, "sincroniz": 3, "同期": 3, "connector": 2, "webhook": 3,
        "sso$": 3, "saml": 3, "single sign-on": 3, "シングルサインオン": 3,
        "slow": 2, "lento": 2, "lente$": 2, "langsam": 2, "遅い": 2, "dashboard": 1.5, "load$": 1,
        "integration": 2, "integraci": 2, "intégration": 2, "連携": 2,
        "outage": 2, "down$": 1, "stuck": 2, "atascad": 2, "hängt": 2, "not working": 2,
        "no funciona": 2, "ne fonctionne pas": 2, "funktioniert nicht": 2, "動かない": 2,
        "reinstall": 2, "reinstal": 2, "neuinstallation": 2, "redémarr": 1.5, "restart": 1.5,
        "neustart": 1.5, "再起動": 1.5, "logs$": 1.5, "agent$": 1, "cache$": 1, "server": 1.5,
        "servidor": 1.5, "serveur": 1.5, "android": 1, "ios$": 1, "app$": 1, "export": 1, "停止": 1.5,
    },
    "account": {
        "password": 3, "contraseña": 3, "mot de passe": 3, "passwort": 3, "パスワード": 3,
        "reset": 1.5, "restablec": 1.5, "réinitialis": 1.5, "zurücksetz": 1.5, "再設定": 1.5,
        "2fa$": 3, "two-factor": 3, "mfa$": 3, "二段階": 3, "dos factores": 3, "zwei-faktor": 3,
        "locked out": 3, "regain access": 2, "access to my account": 2, "login": 1.5, "log in": 1.5, "ログイン": 1.5, "iniciar sesión": 1.5, "connexion": 1,
        "anmeld": 1.5,
        "sign in": 1.5, "username": 2, "profile": 1.5, "permission": 1.5,
        "account": 1.5, "compte": 1.5, "cuenta": 1.5, "konto": 1.5, "アカウント": 1.5,
        "delete": 1.5, "supprim": 1.5, "eliminar": 1.5, "borrar": 1.5, "lösch": 1.5, "削除": 1.5,
        "退会": 3, "gdpr": 2, "rgpd": 2, "dsgvo": 2, "personal data": 2, "données personnelles": 2,
        "datos personales": 2, "personenbezogen": 2, "個人情報": 2,
        "owner": 2, "propietario": 2, "propriétaire": 2, "inhaber": 2, "オーナー": 2, "transfer": 1,
        "invite": 2, "invitar": 2, "inviter": 2, "einladen": 2, "招待": 2, "colleagues": 1.5,
        "seats$": 2, "team members": 2, "add users": 2,
        "email address": 2, "e-mail address": 2, "adresse e-mail": 2, "dirección de correo": 2,
        "e-mail-adresse": 2, "メールアドレス": 2,
    },
    "general": {
        "partner": 3, "reseller": 2, "distribuidor": 2, "revendeur": 2, "wiederverkäufer": 2,
        "suggestion": 3, "sugerencia": 3, "vorschlag": 3, "提案": 3, "feature idea": 2,
        "feature request": 3, "would be great if": 2, "would be nice": 2,
        "support hours": 3, "office hours": 3, "opening hours": 3, "business hours": 3,
        "horario": 3, "heures d'ouverture": 3, "öffnungszeiten": 3, "supportzeiten": 3,
        "営業時間": 3, "対応時間": 3, "holiday": 1.5, "fiestas": 1.5, "feiertag": 1.5,
        "jours fériés": 1.5, "年末年始": 1.5,
        "thanks": 1.5, "thank you": 1.5, "gracias": 1.5, "merci$": 1.5, "danke": 1.5, "ありがとう": 1.5,
        "hello": 1.5, "hi$": 1.5, "good morning": 1.5, "hola$": 1.5, "bonjour": 1.5, "hallo$": 1.5,
        "guten tag": 1.5, "こんにちは": 1.5, "just checking": 2, "everything works": 2,
        "tout fonctionne": 2, "todo funciona": 2, "alles funktioniert": 2,
    },
}

# --- priority -----------------------------------------------------------------------------------
# Escalation cues only; "low" comes from a clearly non-problem request (general intent).
PRIORITY: dict[str, dict[str, float]] = {
    "critical": {
        "outage": 3, "production down": 3, "production is down": 3, "all of our customers": 2,
        "all customers": 2, "data loss": 3, "security breach": 3, "panne générale": 3,
        "interrupción del servicio": 3, "caída total": 3, "ausfall": 3, "本番障害": 3, "全面停止": 3,
        "システム障害": 3,
    },
    "high": {
        "blocking": 3, "blocker": 3, "urgent": 3, "asap$": 3, "as soon as possible": 3,
        "cannot work": 2, "can't work": 2, "deadline": 2, "bloquant": 3, "nous bloque": 3,
        "bloqueando": 3, "dringend": 3, "blockiert uns": 3, "至急": 3, "緊急": 3,
        # negated urgency must not escalate
        "not urgent": 0, "pas urgent": 0, "no es urgente": 0, "nicht dringend": 0, "no rush": 0,
    },
}

# --- sentiment ----------------------------------------------------------------------------------
SENTIMENT: dict[str, dict[str, float]] = {
    "angry": {
        "unacceptable": 3, "inaceptable": 3, "inacceptable": 3, "inakzeptabel": 3, "unzumutbar": 3,
        "inadmissible": 3, "frustr": 2, "furious": 3, "furios": 3, "furieux": 3, "wütend": 3,
        "angry": 3, "en colère": 3, "enfadad": 3, "enojad": 3, "verärgert": 3, "not happy": 2,
        "ridiculous": 2, "ridicule": 2, "ridículo": 2, "lächerlich": 2, "terrible": 2, "horrible": 2,
        "worst": 2, "pésimo": 2, "scandal": 2, "escándalo": 2, "skandal": 2, "fix it now": 3,
        "third time": 2, "still not fixed": 2, "tercera vez": 2, "troisième fois": 2, "dritten mal": 2,
        "最悪": 3, "ふざけ": 3, "いい加減": 3, "何度も": 2, "許せ": 2, "怒": 2,
    },
    "satisfied": {
        "love": 2, "great$": 1.5, "would be great": 0, "not great": 0, "awesome": 2, "excellent": 2,
        "amazing": 2, "fantastic": 2, "appreciate": 1.5, "happy with": 2,
        "thank": 0.5, "gracias": 0.5, "merci$": 0.5, "danke": 0.5, "ありがとう": 0.5,
        "encanta": 2, "genial": 2, "génial": 2, "adore": 2, "ravi$": 2, "ravis$": 2, "toll$": 1.5,
        "begeistert": 2, "zufrieden": 2, "super$": 1, "素晴らしい": 2, "満足": 2,
    },
}

# --- writer topics ------------------------------------------------------------------------------
# Cross-lingual concepts, so a French or Japanese ticket still finds the English KB doc it is about.
TOPICS: dict[str, dict[str, float]] = {
    "refund": {"refund": 1, "reembols": 1, "rembours": 1, "erstatt": 1, "rückerstatt": 1, "返金": 1,
               "devuélv": 1, "devolución": 1},
    "duplicate": {"duplicate": 1, "twice": 1, "double": 1, "doppelt": 1, "duplicad": 1,
                  "deux fois": 1, "dos veces": 1, "zweimal": 1, "二重": 1, "重複": 1},
    "trial": {"trial": 1, "periodo de prueba": 1, "essai": 1, "testphase": 1, "トライアル": 1, "試用": 1},
    "invoice": {"invoice": 1, "vat$": 1, "factur": 1, "rechnung": 1, "iva$": 1, "tva$": 1, "請求書": 1,
                "インボイス": 1},
    "card": {"card$": 1, "declined": 1, "renew": 1, "tarjeta": 1, "carte$": 1, "karte$": 1, "カード": 1,
             "payment": 1, "paiement": 1, "pago$": 1, "zahlung": 1},
    "proration": {"prorat": 1, "upgrade": 1, "mid-cycle": 1, "prorrat": 1, "au prorata": 1,
                  "anteilig": 1, "日割": 1, "アップグレード": 1},
    "api": {"api": 1, "endpoint": 1, "5xx$": 1, "500$": 1, "http$": 1},
    "sync": {"sync": 1, "synchron": 1, "sincroniz": 1, "同期": 1, "connector": 1},
    "webhook": {"webhook": 1, "signing secret": 1, "ウェブフック": 1},
    "password": {"password": 1, "contraseña": 1, "mot de passe": 1, "passwort": 1, "パスワード": 1},
    "reset": {"reset": 1, "restablec": 1, "réinitialis": 1, "zurücksetz": 1, "再設定": 1},
    "two_factor": {"2fa$": 1, "two-factor": 1, "mfa$": 1, "二段階": 1, "dos factores": 1,
                   "zwei-faktor": 1, "double authentification": 1, "backup code": 1},
    "owner": {"owner": 1, "propietario": 1, "propriétaire": 1, "inhaber": 1, "eigentümer": 1,
              "オーナー": 1, "所有者": 1},
    "deletion": {"delete": 1, "deletion": 1, "gdpr": 1, "rgpd": 1, "dsgvo": 1, "personal data": 1,
                 "supprim": 1, "eliminar": 1, "borrar": 1, "lösch": 1, "削除": 1, "退会": 1},
    "sso": {"sso$": 1, "saml": 1, "single sign-on": 1, "シングルサインオン": 1},
    "seats": {"invite": 1, "seats$": 1, "team members": 1, "colleagues": 1, "add users": 1,
              "invitar": 1, "inviter": 1, "einladen": 1, "招待": 1},
    "email_change": {"email address": 1, "account email": 1, "email change": 1, "adresse e-mail": 1,
                     "dirección de correo": 1, "e-mail-adresse": 1, "メールアドレス": 1},
    "overage": {"overage": 1, "quota": 1, "fee$": 1},
}

# --- fixed reply phrases ------------------------------------------------------------------------
# The writer's greetings are the judge's language check, so they live here, together.
GREETINGS: dict[str, str] = {
    "en": "Hello,",
    "es": "Hola:",
    "fr": "Bonjour,",
    "de": "Guten Tag,",
    "ja": "お問い合わせいただきありがとうございます。",
}
# What the judge accepts as a greeting in each language (the writer's own plus common variants).
GREETING_PREFIXES: dict[str, tuple[str, ...]] = {
    "en": ("Hello", "Hi", "Dear", "Good morning", "Good afternoon"),
    "es": ("Hola", "Estimad", "Buenos días", "Buenas tardes"),
    "fr": ("Bonjour", "Madame", "Monsieur", "Cher", "Chère"),
    "de": ("Guten Tag", "Hallo", "Sehr geehrte", "Liebe"),
    "ja": ("お問い合わせ", "いつも", "お世話になっております"),
}
INTROS: dict[str, str] = {
    "en": "Here is what our documentation says about your request:",
    "es": "Esto es lo que indica nuestra documentación sobre su solicitud:",
    "fr": "Voici ce que prévoit notre documentation pour votre demande :",
    "de": "Dazu steht in unserer Dokumentation:",
    "ja": "ご依頼の件について、ドキュメントには次のように記載されています。",
}
NO_DOCS: dict[str, str] = {
    "en": "Thank you for your message. A member of our support team will follow up with you shortly.",
    "es": "Gracias por su mensaje. Un miembro de nuestro equipo de soporte le responderá en breve.",
    "fr": "Merci pour votre message. Un membre de notre équipe support vous répondra rapidement.",
    "de": "Vielen Dank für Ihre Nachricht. Unser Support-Team meldet sich in Kürze bei Ihnen.",
    "ja": "サポートチームの担当者より追ってご連絡いたします。",
}
CLOSINGS: dict[str, str] = {
    "en": "Best regards,\nSupport team",
    "es": "Saludos cordiales,\nEquipo de soporte",
    "fr": "Cordialement,\nL'équipe support",
    "de": "Mit freundlichen Grüßen\nIhr Support-Team",
    "ja": "今後ともよろしくお願いいたします。\nサポートチーム",
}
# Only the strong writer says this, and only to angry customers.
APOLOGIES: dict[str, str] = {
    "en": "We are sorry for the trouble this has caused you.",
    "es": "Lo sentimos mucho por las molestias que esto le ha causado.",
    "fr": "Nous sommes désolés pour la gêne occasionnée.",
    "de": "Wir entschuldigen uns für die Unannehmlichkeiten.",
    "ja": "ご不便をおかけして誠に申し訳ございません。",
}
# What the judge accepts as an apology, per language (matched like lexicon terms).
APOLOGY_MARKERS: dict[str, dict[str, float]] = {
    "en": {"sorry": 1, "apolog": 1, "regret": 1},
    "es": {"lo sentimos": 1, "lo siento": 1, "disculp": 1, "lamentamos": 1, "perdón": 1},
    "fr": {"désolé": 1, "excuse": 1, "pardon": 1, "regrett": 1},
    "de": {"entschuldig": 1, "leid$": 1, "bedauern": 1},
    "ja": {"申し訳": 1, "すみません": 1, "お詫び": 1, "ご迷惑": 1},
}
