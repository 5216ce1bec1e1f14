"""The words of a request to stop, by language: what `opt_out_grammar` reads.

Pure data. Each language names, per concept (see `opt_out_lexicon.Concept`):

- `lemmas`: dictionary forms ("enviar", "писать", "пиша"); every inflected form
  ("envíenme" aside, see `enclitics`) comes from simplemma's dictionaries (through
  the table `tools/gen_opt_out_forms.py` generates: run it after adding one), so the
  grammar knows "envíen", "присылайте", "изпращайте" without suffix rules of ours;
- `words`: closed-class words (negation, pronouns, articles) and forms a
  dictionary does not hold (SMS spellings, slang, forms missing from simplemma);
- `phrases`: multi-word units read as one word ("para de", "de baja", "не тот");
- `variants`: common misspellings and SMS abbreviations, read as the word they mean;
- `ambiguous`: forms never read as a concept, because their everyday meaning is
  another word ("para" is "for" far more often than "stop!").

Every string is written as people type it and normalised on load (accents, case).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LanguageWords:
    """What one language contributes to the lexicon (see the module docstring)."""

    lemmas: dict[str, str]
    words: dict[str, str]
    phrases: dict[str, str] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    ambiguous: str = ""
    enclitics: tuple[str, ...] = ()
    glued_negation: str = ""


EN = LanguageWords(
    lemmas={
        "want": "want wish need",
        "receive": "receive get",
        "send": "send text message contact email spam bother harass",
        "call": "call ring",
        "stop": "stop quit cease discontinue",
        "remove": "remove delete drop erase",
        "msg": "message text",
        "exit": "leave",
        "gap": "keep",
    },
    words={
        "neg": "dont don not never no",
        "how": "how",
        "more": "more anymore again longer",
        "me": "me us",
        "my": "my our",
        "gap": "t do to any of the your these those this such all from on off ever please pls"
        " plz thanks you just kindly i we really",
        "msg": "texts messages msg msgs sms txt txts alerts alert promos promo ads spam"
        " notifications",
        "send": "texting messaging txting msging sending contacting",
        "list": "list lists database system mailing",
        "number": "number phone cell",
        "wrong": "wrong incorrect",
        "subject": "he she they it nobody someone",
        "aux": "did didn was were has have had",
        "subscription": "subscription subscriptions membership",
    },
    variants={
        "txting": "texting",
        "msging": "messaging",
        "nomore": "more",
        "ur": "your",
        "u": "you",
    },
)

ES = LanguageWords(
    lemmas={
        "want": "querer desear necesitar interesar",
        "receive": "recibir llegar",
        "send": "enviar mandar escribir textear contactar molestar mensajear spamear acosar",
        "call": "llamar",
        "stop": "dejar parar cesar detener suspender cancelar",
        "remove": "quitar borrar eliminar sacar retirar remover excluir",
        "unsub": "desuscribir desinscribir desafiliar desapuntar",
        "leave": "dejar",
        "msg": "mensaje texto notificación alerta promoción oferta",
        "wrong": "equivocar",
        "give": "dar",
        "exit": "salir",
        "gap": "volver seguir",
    },
    words={
        "neg": "no nunca jamás ni tampoco",
        "how": "cómo como",
        "more": "más ya nunca",
        "nomore": "basta ningún ninguno ninguna ningunos cero",
        "me": "me nos mí",
        "my": "mi mis nuestro",
        "gap": "de que a los las el la lo un una unos unas sus su tus tu esos esas estos estas"
        " este ese esta por favor porfa xfa porfis plis please pls le les se en nada solo tanto"
        " tantos tantas todo todos todas y ustedes usted yo ya d realmente absolutamente",
        "msg": "sms msj msjs mensajito mensajitos spam publicidad promos whatsapps",
        "unsub": "desinscribir desinscribirme desinscribanme desinscriban desinscribirse",
        "send": "spamear spameen spamean",
        "list": "lista listas listado base datos registro sistema grupo difusión",
        "number": "número celular teléfono móvil cel tel",
        "wrong": "equivocado equivocada incorrecto incorrecta errado errada erróneo",
        "alone": "paz tranquilo tranquila tranquilos tranquilas",
        "subject": "él ella ellos ellas nadie alguien",
        "aux": "he has ha han hemos había habían",
        "be": "es soy este esto",
        "subscription": "suscripción suscripciones subscripción membresía",
    },
    phrases={"para de": "stop", "de baja": "baja"},
    variants={
        "q": "que",
        "x": "por",
        "k": "que",
        "ke": "que",
        "kiero": "quiero",
        "qiero": "quiero",
        "qero": "quiero",
        "kieren": "quieren",
        "mensages": "mensajes",
        "mensage": "mensaje",
        "mnsj": "mensaje",
        "mnsjs": "mensajes",
        "mjs": "mensajes",
        "mensjs": "mensajes",
        "xq": "porque",
        "tmb": "también",
        "numro": "número",
    },
    ambiguous="para paro de",
    enclitics=("me", "nos"),
)

FR = LanguageWords(
    lemmas={
        "want": "vouloir souhaiter désirer intéresser",
        "receive": "recevoir",
        "send": "envoyer écrire texter contacter déranger harceler spammer solliciter relancer",
        "call": "appeler téléphoner",
        "stop": "arrêter cesser stopper suspendre annuler résilier",
        "remove": "retirer supprimer enlever effacer rayer ôter radier",
        "unsub": "désabonner désinscrire",
        "leave": "laisser ficher foutre",
        "leave_off": "lâcher",
        "msg": "message texto notification alerte publicité promo promotion offre",
        "wrong": "tromper",
        "exit": "sortir",
        "gap": "continuer",
    },
    words={
        "neg": "ne n pas plus jamais aucun aucune rien",
        "how": "comment",
        "more": "plus encore jamais",
        "nomore": "assez fini finis marre",
        "me": "me m moi nous",
        "my": "mon ma mes notre nos",
        "gap": "de d des les le la l vos votre ces ce cet cette tes ton ta que qu en y svp stp"
        " merci vous je j me m plus pas du au aux sur par a absolument vraiment",
        "msg": "sms msg msgs txt pub pubs promos spam envois texto textos",
        "unsub": "désinscrire désinscrivez désinscris désinscrivez désinscrit",
        "send": "spammer spammez spamme texter textez texte",
        "list": "liste listes fichier base contacts mailing diffusion",
        "number": "numéro num tel téléphone portable",
        "wrong": "mauvais mauvaise faux erroné erreur",
        "alone": "tranquille tranquilles paix",
        "subject": "il elle ils elles on tu personne",
        "aux": "ai as a avons avez ont suis es est sommes êtes sont été avait",
        "be": "est c",
        "subscription": "abonnement abonnements inscription souscription",
    },
    phrases={
        "s il vous plait": "gap",
        "s il te plait": "gap",
        "la paix": "alone",
        "plus de": "nomore neg more gap",
        "plus d": "nomore neg more gap",
    },
    variants={
        "jveux": "veux",
        "jveu": "veux",
        "veu": "veux",
        "plu": "plus",
        "pa": "pas",
        "mesage": "message",
        "mesages": "messages",
        "mess": "messages",
        "messag": "messages",
        "vs": "vous",
        "jamai": "jamais",
        "slvp": "svp",
        "svpl": "svp",
    },
    ambiguous="arret",
)

RU = LanguageWords(
    lemmas={
        "want": "хотеть желать",
        "receive": "получать получить приходить",
        "send": "писать написать присылать прислать отправлять отправить слать послать высылать"
        " выслать беспокоить побеспокоить тревожить надоедать спамить рассылать доставать",
        "call": "звонить позвонить",
        "stop": "перестать переставать прекратить прекращать остановить останавливать"
        " заканчивать закончить кончать отменить отменять",
        "remove": "удалить удалять убрать убирать исключить исключать вычеркнуть вычёркивать"
        " отключить отключать снять",
        "unsub": "отписать отписаться отписывать",
        "leave": "оставить оставлять",
        "leave_off": "отстать отвязаться отвалить",
        "msg": "сообщение рассылка уведомление реклама эсэмэска смска",
        "wrong": "ошибиться неправильный неверный ошибочный чужой",
        "exit": "выйти выходить",
        "list": "список база рассылка",
        "number": "номер телефон",
        "subscription": "подписка",
        "gap": "продолжать",
    },
    words={
        "neg": "не ни нет никогда",
        "how": "как",
        "more": "больше более уже еще снова никогда",
        "nomore": "хватит никаких никакие довольно достаточно",
        "want": "надо нужно нужны нужен нужна хочется",
        "stop": "хватит",
        "me": "мне меня нам нас",
        "my": "мой моя мое мои моего моему моим",
        "gap": "ваши ваших вашу ваш вашего вашей этих эти это эту свои своих всякие всяких"
        " пожалуйста пж пжл пжлст плиз плз и же уж что чтобы чтоб от из вас вы с со по на"
        " тоже все так тут сюда этот этого мне меня нам нас больше уже еще вашими вашим"
        " рекламные рекламных вообще совсем",
        "msg": "смс sms смски смсок смсками сообщ эсэмэс спам смсы смска смску",
        "leave_off": "отстаньте отстань отвяжитесь",
        "unsub": "отпишитесь отпишись отписаться отпишите отпиши отписать отписывайте",
        "send": "спамить спамьте",
        "alone": "покое покой",
        "subject": "он она они оно никто",
        "aux": "",
        "be": "это",
    },
    phrases={"не тот": "wrong", "в покое": "alone"},
    variants={
        "пожалуиста": "пожалуйста",
        "сообшения": "сообщения",
        "больш": "больше",
        "ниче": "ничего",
    },
    glued_negation="не",
)

BG = LanguageWords(
    lemmas={
        "want": "искам желая трябвам интересувам",
        "receive": "получавам получа идвам",
        "send": "пиша пращам изпращам изпратя пратя безпокоя занимавам тормозя досаждам спамя",
        "call": "звъня звънна",
        "stop": "спра спирам престана преставам прекратя прекратявам откажа отказвам",
        "remove": "махна махам премахна премахвам изтрия изтривам извадя изваждам изключа"
        " изключвам",
        "unsub": "отпиша отписвам",
        "leave": "оставя оставям",
        "leave_off": "разкарам",
        "msg": "съобщение реклама известие оферта",
        "wrong": "сбъркам объркам",
        "exit": "изляза излизам",
        "list": "списък",
        "number": "номер телефон",
        "gap": "продължавам продължа",
    },
    words={
        "neg": "не ни никога недей недейте",
        "how": "как",
        "more": "повече вече пак никога",
        "nomore": "стига никакви без достатъчно",
        "me": "ми ме мен мене нас ни",
        "my": "моя моят мои моите моето ми",
        "gap": "да на ваши вашите вашия вашият тези тия такива с със от моля мерси благодаря"
        " плс пак също вие ти ги го и за това тази този повече вече ви ли изобщо наистина",
        "msg": "смс sms есемес есемеси съобщ спам смсите",
        "remove": "изтрийте изтрии махнете премахнете извадете изключете",
        "send": "пишете пращайте изпращайте спамете спами тормозете тормози",
        "list": "списъка база бюлетин бюлетина",
        "number": "номера номерът",
        "wrong": "грешен грешна грешния грешно погрешен сбъркан сбъркания чужд",
        "alone": "мира намира спокойствие",
        "leave_off": "разкарайте разкарай",
        "unsub": "отпиша отпишете отпиши отписвам отписвайте",
        "subject": "той тя те никой някой",
        "aux": "",
        "be": "е сте това",
        "subscription": "абонамент абонамента абонаментът",
    },
    phrases={"на мира": "alone"},
    variants={"сьобщения": "съобщения", "сьобщение": "съобщение"},
    glued_negation="не",
)

LANGUAGE_WORDS: dict[str, LanguageWords] = {"en": EN, "es": ES, "fr": FR, "ru": RU, "bg": BG}

# How a verb form reads as a request (a command or a dictionary form), by language: the
# endings of the imperative and present subjunctive, after normalisation (no accents,
# й read as и). Past and third-person endings are checked first and never read as a
# request, so "no me enviaron el código" and "вы не писали" are complaints, not opt-outs.
# Spanish commands depend on the verb's class (-ar / -er, -ir); "negative" commands use
# the subjunctive ("no me envíes"), affirmative ones the imperative ("déjame").
COMMAND_ENDINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {},
    "es": {
        "ar": ("a", "e", "en", "ad"),
        "er": ("e", "a", "an", "ed", "id"),
        "ar_negative": ("es", "e", "en", "eis", "emos"),
        "er_negative": ("as", "a", "an", "ais", "amos"),
    },
    "fr": {"": ("ez", "e", "es", "s", "ons")},
    "ru": {"": ("и", "ите", "ь", "ьте", "ете", "тесь", "ись", "ься")},
    "bg": {"": ("и", "ете", "ите", "аи", "аите", "яи", "яите")},
}
NOT_COMMAND_ENDINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {},
    "es": {
        "ar": ("aba", "abas", "aban", "aron", "aste", "ado", "ada", "ados", "adas", "ara", "aras")
        + ("aran", "ase", "asen", "ando", "are"),
        "er": ("ia", "ias", "ian", "iamos", "ieron", "iste", "ido", "ida", "idos", "idas", "iera")
        + ("ieras", "ieran", "iese", "iendo", "ra", "ras", "ran"),
    },
    "fr": {"": ("ais", "ait", "aient", "ions")},
    "ru": {
        "": ("л", "ла", "ло", "ли", "лся", "лась", "лись", "лось", "ешь", "ишь", "ет", "ит")
        + ("ут", "ют", "ат", "ят")
    },
    "bg": {"": ("л", "ла", "ло", "ли", "х", "ха", "хме", "хте", "ше", "ш", "т", "ат", "ят")},
}
