"""Offline texts for the text benchmark: man pages, Debian package descriptions, scam templates.

Every text is 40-400 characters of prose, taken from what is installed on the machine (man
pages of installed packages, read as roff source; the short descriptions ``apt-cache dumpavail``
lists) or composed from the spam/scam templates below. Files and descriptions of reserved
packages (``tools.datasources.is_reserved``: the fortunes and the wallpapers kept for an
independent evaluation) are never read. The corpus is deduplicated: texts equal after
normalisation, and texts sharing much of their wording (word 3-gram containment), keep one copy,
so no two benchmark texts are near-duplicates of each other.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.datasources import is_reserved

MIN_CHARS, MAX_CHARS = 40, 400
BANDS = ((40, 100), (100, 200), (200, 400))
MAN_DIR = Path("/usr/share/man")
DPKG_INFO = Path("/var/lib/dpkg/info")


@dataclass(frozen=True)
class SourceText:
    """One benchmark text and where it came from (``man:<package>``, ``apt``, ``spam``)."""

    text: str
    source: str


def band_of(text: str) -> str:
    """The length band label ("40-100", "100-200", "200-400") of a text."""
    n = len(text)
    for lo, hi in BANDS:
        if n <= hi:
            return f"{lo}-{hi}"
    return f"{BANDS[-1][0]}-{BANDS[-1][1]}"


# -- man pages -------------------------------------------------------------------------------

def _file_owners() -> dict[str, str]:
    """Installed file path -> owning package, from dpkg's file lists."""
    owners: dict[str, str] = {}
    for lst in sorted(DPKG_INFO.glob("*.list")):
        pkg = lst.name[:-5].split(":")[0]
        for line in lst.read_text(errors="replace").splitlines():
            if line.startswith(str(MAN_DIR)):
                owners[line] = pkg
    return owners


_FONT = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)")
_ESCAPES = [(re.compile(r"\\\(em|\\\(en"), " - "), (re.compile(r"\\[-]"), "-"),
            (re.compile(r"\\\(aq|\\\(cq|\\\(oq"), "'"), (re.compile(r"\\\(lq|\\\(rq|\\\(dq"), '"'),
            (re.compile(r"\\&|\\/|\\,|\\:|\\%|\\c"), ""), (re.compile(r"\\ |\\~|\\0"), " "),
            (re.compile(r"\\e"), r"\\\\"), (re.compile(r"\\\*\(..|\\\*\[[^\]]*\]|\\\*."), ""),
            (re.compile(r"\\s[-+]?\d+"), ""), (re.compile(r"\\\(.."), "")]
_TEXT_MACROS = re.compile(r"^\.(?:B|I|BR|RB|IR|RI|BI|IB|SM|SB)\s+(.*)$")
_BREAK_MACROS = re.compile(r"^\.(?:PP|P|LP|TP|IP|HP|SH|SS|Pp|Sh|Ss|It|br|sp|Bl|El|in|RS|RE|TQ)\b")
_NOFILL_START = re.compile(r"^\.(?:nf|EX|Bd|TS|EQ|de)\b")
_NOFILL_END = re.compile(r"^\.(?:fi|EE|Ed|TE|EN|\.)\b")
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _roff_paragraphs(src: str) -> list[str]:
    """Prose paragraphs of a man page's roff source (no-fill blocks and tables skipped)."""
    paras, cur, nofill = [], [], False
    for line in src.splitlines():
        if nofill:
            nofill = not _NOFILL_END.match(line)
            continue
        if _NOFILL_START.match(line):
            nofill = True
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        if not line.strip() or _BREAK_MACROS.match(line):
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        m = _TEXT_MACROS.match(line)
        if m:
            line = m.group(1).replace('"', "")
        elif line.startswith((".", "'")):
            continue
        for pat, rep in _ESCAPES:
            line = pat.sub(rep, line)
        line = _FONT.sub("", line)
        cur.append(line.strip())
    if cur:
        paras.append(" ".join(cur))
    return [" ".join(p.split()) for p in paras]


def _sentence_ok(s: str) -> bool:
    """Reads like a sentence of prose, not a command line, a table row or code."""
    if len(s) < 15 or not s[0].isupper() or s[-1] not in ".!?":
        return False
    if re.search(r"[{}<>=;|\\`$#@_]|\s-{1,2}\w|\w/\w|\(\)|\.\w{1,4}\b|\s\.", s):
        return False
    return sum(ch.isalpha() or ch == " " for ch in s) >= 0.9 * len(s) and len(s.split()) >= 3


def _chunks(paras: list[str], rng: np.random.Generator,
            band_p: tuple[float, ...] = (0.3, 0.3, 0.4)) -> list[str]:
    """Runs of consecutive prose sentences of one page grouped into texts of a random band."""
    runs: list[list[str]] = [[]]
    for para in paras:
        for sent in _SENT_SPLIT.split(para):
            if _sentence_ok(sent):
                runs[-1].append(sent)
            elif runs[-1]:
                runs.append([])
    out = []
    for sents in runs:
        i = 0
        while i < len(sents):
            lo, hi = BANDS[int(rng.choice(len(BANDS), p=band_p))]
            cur = sents[i]
            i += 1
            while len(cur) < lo and i < len(sents) and len(cur) + 1 + len(sents[i]) <= hi:
                cur += " " + sents[i]
                i += 1
            if MIN_CHARS <= len(cur) <= MAX_CHARS and len(cur.split()) >= 6:
                out.append(cur)
    return out


def man_texts(seed: int = 0, max_pages: int | None = None,
              per_package: int = 1500) -> list[SourceText]:
    """Prose texts from the English man pages of installed, non-reserved packages.

    At most ``per_package`` texts (a seeded sample) per package, so that a few packages with
    thousands of generated pages do not make up the corpus."""
    owners = _file_owners()
    pages = sorted(p for p in owners if re.match(rf"{MAN_DIR}/man\d/", p) and p.endswith(".gz"))
    if max_pages is not None:
        pages = pages[:max_pages]
    rng = np.random.default_rng(seed)
    by_pkg: dict[str, list[str]] = {}
    for path in pages:
        pkg = owners[path]
        if is_reserved(pkg):
            continue
        try:
            src = gzip.decompress(Path(path).read_bytes()).decode("utf-8", errors="replace")
        except (OSError, EOFError):
            continue
        if src.startswith(".so "):
            continue  # a link to another page
        by_pkg.setdefault(pkg, []).extend(_chunks(_roff_paragraphs(src), rng))
    out: list[SourceText] = []
    for pkg in sorted(by_pkg):
        texts = sorted(set(by_pkg[pkg]))
        if len(texts) > per_package:
            texts = [texts[i] for i in sorted(rng.choice(len(texts), per_package, replace=False))]
        out.extend(SourceText(t, f"man:{pkg}") for t in texts)
    return out


# -- Debian package descriptions --------------------------------------------------------------

def apt_texts() -> list[SourceText]:
    """Short descriptions of Debian packages (``apt-cache dumpavail``), reserved ones skipped."""
    try:
        dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True,
                              check=True, timeout=300).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    out, pkg = [], ""
    for line in dump.splitlines():
        if line.startswith("Package: "):
            pkg = line[9:].strip()
        elif line.startswith("Description: ") and pkg and not is_reserved(pkg):
            d = line[13:].strip()
            if MIN_CHARS <= len(d) <= MAX_CHARS and len(d.split()) >= 6:
                out.append(SourceText(d[0].upper() + d[1:], "apt"))
    return out


# -- spam and scam, composed from templates ----------------------------------------------------

_SPAM_PARTS = {
    "open": ["Congratulations!", "URGENT:", "Dear customer,", "Hello friend,", "Attention:",
             "Final notice:", "Good news!", "Hi there,", "Security alert:", "Dear winner,",
             "Important:", "Act now!", "Limited time offer!", "Exclusive deal:",
             "Your account update:", "Greetings,", "Notice from support:", "Hey,",
             "Last chance!", "Official notification:"],
    "claim": ["you have been selected to receive a {amt} gift card",
              "your package could not be delivered due to an unpaid fee of {amt}",
              "your bank account has been temporarily locked after suspicious activity",
              "you won a brand new {item} in our monthly draw",
              "we detected an unauthorized login to your {brand} account",
              "you are eligible for a tax refund of {amt}",
              "earn {amt} a day working from home with no experience needed",
              "our crypto trading bot doubled my savings in {n} days",
              "lose {n} pounds in two weeks with this one weird trick",
              "hot singles in your area want to meet you tonight",
              "your subscription to {brand} has expired and your files will be deleted",
              "a wealthy investor wants to share a {amt} inheritance with you",
              "get cheap meds without a prescription shipped overnight",
              "your {brand} password expires today",
              "claim your free {item} before the offer runs out",
              "we are giving away {n} {item}s to our loyal followers",
              "invest {amt} today and receive ten times more by next week",
              "your loan of {amt} has been pre-approved with zero interest",
              "a delivery driver tried to reach you about your parcel",
              "you have an unclaimed reward of {amt} waiting in your wallet"],
    "act": ["click the link below to claim it", "verify your identity at the link in my bio",
            "reply YES to confirm", "send your card details to complete the transfer",
            "call {phone} within 24 hours", "DM me for the details",
            "pay the small processing fee to release the funds",
            "log in here to avoid suspension", "enter your code at our secure site",
            "follow and share this post to enter", "text STOP to opt out",
            "transfer the deposit by gift card to secure your spot",
            "contact our agent on WhatsApp", "download the app and use my referral code",
            "fill in the form with your bank login", "scan the QR code to get started"],
    "close": ["Offer ends tonight.", "Do not miss out!", "Thank you for your cooperation.",
              "This is your final reminder.", "Only {n} spots left.", "100% legit, no scam.",
              "Regards, the security team.", "Hurry, supplies are limited.",
              "Your satisfaction is guaranteed.", "Failure to respond will close your account.",
              "", "", ""],
}
_SLOTS = {
    "amt": ["$500", "$1,000", "$250", "£300", "$5,000", "€750", "$99", "$2,500", "$10,000"],
    "item": ["iPhone", "laptop", "PlayStation", "gift basket", "smart watch", "e-bike",
             "tablet", "designer handbag", "TV", "pair of sneakers"],
    "brand": ["PayPal", "Netflix", "Amazon", "Apple", "bank", "email", "Microsoft", "Steam",
              "Instagram", "crypto wallet"],
    "n": ["3", "5", "7", "10", "14", "20", "30", "50"],
    "phone": ["555-0199", "555-0123", "555-0147", "555-0186", "555-0110"],
}


def spam_texts(n: int, seed: int = 0) -> list[SourceText]:
    """``n`` scam-like messages composed from the template parts (seeded, deterministic)."""
    rng = np.random.default_rng(seed + 7919)

    def pick(key: str) -> str:
        s = str(rng.choice(_SPAM_PARTS[key]))
        return re.sub(r"\{(\w+)\}", lambda m: str(rng.choice(_SLOTS[m.group(1)])), s)

    out = []
    for _ in range(n):
        claim = pick("claim")
        parts = [pick("open"), claim[0].upper() + claim[1:] + ",", pick("act") + "."]
        if rng.random() < 0.4:
            other = pick("claim")
            parts.insert(2, "Also, " + other + ".")
            parts[1] = parts[1][:-1] + "."
        else:
            parts[1] = parts[1][:-1] + ";"
        parts.append(pick("close"))
        text = " ".join(p[0].upper() + p[1:] for p in parts if p)
        if MIN_CHARS <= len(text) <= MAX_CHARS:
            out.append(SourceText(text, "spam"))
    return out


# -- deduplication ------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def _grams(text: str, n: int = 3) -> set[str]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def deduplicate(texts: list[SourceText], max_containment: float = 0.25,
                common_df: float = 0.002) -> list[SourceText]:
    """Keep the first of each group of near-duplicates.

    Exact duplicates after aggressive normalisation go first; then a text is dropped when more
    than ``max_containment`` of the smaller text's word 3-grams appear in an earlier kept text.
    3-grams in more than a fraction ``common_df`` of all texts ("the name of") say nothing about
    copying and are ignored, unless a text has no other.
    """
    import scipy.sparse as sp

    from dedup.text.normalize import aggressive_form

    seen, uniq = set(), []
    for t in texts:
        key = aggressive_form(t.text)
        if key not in seen:
            seen.add(key)
            uniq.append(t)
    vocab: dict[str, int] = {}
    gram_sets = [_grams(t.text) for t in uniq]
    df: dict[str, int] = {}
    for g in gram_sets:
        for x in g:
            df[x] = df.get(x, 0) + 1
    limit = max(2, int(common_df * len(uniq)))
    rows, cols = [], []
    for i, g in enumerate(gram_sets):
        rare = [x for x in g if df[x] <= limit] or list(g)
        for x in rare:
            rows.append(i)
            cols.append(vocab.setdefault(x, len(vocab)))
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                      shape=(len(uniq), max(len(vocab), 1)))
    size = np.asarray(x.sum(1)).ravel()
    keep = np.ones(len(uniq), bool)
    xt = x.T.tocsc()
    block = 2000
    for s in range(0, len(uniq), block):
        inter = (x[s:s + block] @ xt).tocsr()  # shared 3-grams with every text
        for r in range(inter.shape[0]):
            i = s + r
            if not keep[i]:
                continue
            row = inter.getrow(r)
            j, n = row.indices, row.data
            cont = n / np.maximum(np.minimum(size[i], size[j]), 1)
            later = j[(j > i) & (cont > max_containment)]
            keep[later] = False
    return [t for t, k in zip(uniq, keep) if k]


def collect(seed: int = 0, n_spam: int = 5000, max_pages: int | None = None) -> list[SourceText]:
    """The deduplicated corpus in a fixed, seeded order.

    Scam messages share their template phrases, so among themselves no 3-gram counts as common:
    only messages that share little wording with every other kept one stay (two scams built
    from the same claim and call to action would be one campaign, not a negative pair)."""

    def order(texts: list[SourceText]) -> list[SourceText]:
        # A fixed order independent of file-system order; dedup keeps the first of a group.
        return sorted(texts, key=lambda t: hashlib.sha256(f"{seed}:{t.text}".encode()).hexdigest())

    spam = deduplicate(order(spam_texts(n_spam, seed)), common_df=1.0)
    return deduplicate(order(man_texts(seed, max_pages) + apt_texts() + spam))
