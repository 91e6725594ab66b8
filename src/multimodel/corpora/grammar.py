"""A hand-written probabilistic English grammar: the built-in stand-in for WSJ parsing.

Mirrors the paper's constituency-parsing task (WSJ, Penn Treebank), which the MultiModel
paper uses as its data-scarce task: input a tokenised sentence, output its linearised parse
tree. Sentences and their trees are generated together from a PCFG-like grammar written
here, with Penn-Treebank labels: clauses S and SBAR; phrases NP, VP, PP, ADJP, ADVP, WHNP;
tags DT, NN, NNS, NNP, PRP, PRP$, JJ, CD, RB, IN, TO, CC, MD, VB, VBD, VBZ, VBP, WP, WDT and
the punctuation tags ``,`` and ``.``. The rules (weights in the ``*_RULES`` tables) cover
determiners with adjectives, numbers ("twenty-one students", ordinals as JJ: "the third
house"), pronouns, names, possessives, PP attachment to NPs and VPs, relative clauses ("the
man who saw the dog"), coordination of NPs and clauses, transitive / intransitive /
ditransitive / copular / sentential ("said that ...") / infinitival ("wanted to buy ...")
verbs in past, present and modal forms with subject agreement, fronted PPs and adverbs, and
adverbial clauses ("because ..."). Number words come from num2words, as in the
translation and speech corpora, so the three share vocabulary.

Example target (Vinyals et al. 2015 style, see ``trees.py``): words dropped, POS tags kept,
bare closing brackets::

    inputs: "The old man saw twenty-one dogs in the park ."
    target: "(S (NP DT JJ NN ) (VP VBD (NP CD NNS ) (PP IN (NP DT NN ) ) ) . )"
    meta["tree"]: "(S (NP (DT The) (JJ old) (NN man)) (VP (VBD saw) ...) (. .))"

Sentences are held out by their text (:func:`in_test_split`, 10 %, seed-independent), so a
test sentence never appears in training; sentences are distinct within a split. Sizes: 0 means
the natural size, 3,000 train / 300 test (kept small on purpose, like WSJ for the paper).
Cache: ``DATA_DIR/builtin/grammar/<split>-n<size>-s<seed>-v<version>.jsonl``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from multimodel.config import ConfigError
from multimodel.corpora import cache
from multimodel.corpora.trees import Tree, leaves, linearize, to_bracketed
from multimodel.data.example import Example, Split

CORPUS = "grammar"
VERSION = 2
TEST_PERCENT = 10
NATURAL_SIZES = {"train": 3000, "test": 300}
MAX_WORDS = 30

# ----------------------------------------------------------------------------------------
# Lexicon. Nouns: (singular, plural, is_person).

NOUNS = [
    ("man", "men", True), ("woman", "women", True), ("child", "children", True),
    ("teacher", "teachers", True), ("student", "students", True), ("doctor", "doctors", True),
    ("farmer", "farmers", True), ("engineer", "engineers", True), ("manager", "managers", True),
    ("friend", "friends", True), ("neighbour", "neighbours", True), ("driver", "drivers", True),
    ("painter", "painters", True), ("officer", "officers", True), ("writer", "writers", True),
    ("dog", "dogs", False), ("cat", "cats", False), ("bird", "birds", False), ("horse", "horses", False),
    ("company", "companies", False), ("market", "markets", False), ("city", "cities", False),
    ("house", "houses", False), ("car", "cars", False), ("book", "books", False),
    ("letter", "letters", False), ("report", "reports", False), ("price", "prices", False),
    ("bank", "banks", False), ("river", "rivers", False), ("garden", "gardens", False),
    ("school", "schools", False), ("park", "parks", False), ("table", "tables", False),
    ("window", "windows", False), ("road", "roads", False), ("shop", "shops", False),
    ("box", "boxes", False), ("picture", "pictures", False), ("song", "songs", False),
    ("idea", "ideas", False), ("plan", "plans", False), ("boat", "boats", False),
    ("train", "trains", False), ("hotel", "hotels", False), ("village", "villages", False),
    ("office", "offices", False), ("computer", "computers", False), ("machine", "machines", False),
    ("apple", "apples", False), ("bottle", "bottles", False), ("island", "islands", False),
    ("bridge", "bridges", False), ("museum", "museums", False), ("team", "teams", False),
    ("key", "keys", False), ("dress", "dresses", False), ("coat", "coats", False),
    ("bag", "bags", False), ("shirt", "shirts", False), ("story", "stories", False),
]
PERSON_NAMES = ["John", "Mary", "Anna", "Peter", "Susan", "David", "Maria", "Thomas", "Claire", "Paul"]
PLACE_NAMES = ["Paris", "London", "Berlin", "Boston", "Geneva", "Lyon", "Munich", "Chicago"]
ADJECTIVES = [
    "old", "young", "small", "large", "big", "new", "red", "green", "happy", "quiet", "busy", "cold",
    "warm", "famous", "strange", "tall", "dark", "bright", "empty", "heavy", "careful", "clever",
    "local", "early", "beautiful", "expensive", "cheap", "long", "short", "important", "angry",
    "tired", "hungry", "rich", "poor", "modern", "blue", "white", "wet", "friendly",
]
DEGREE_ADVERBS = ["very", "quite", "rather", "really", "too"]
MANNER_ADVERBS = ["quickly", "slowly", "carefully", "quietly", "again", "early", "suddenly", "together"]
SENTENCE_ADVERBS = ["However", "Meanwhile", "Later", "Suddenly", "Finally"]
PREPOSITIONS = ["in", "on", "near", "with", "under", "behind", "from", "at", "for", "by", "into", "without"]
SUBORDINATORS = ["because", "when", "after", "before", "while", "although", "if"]
MODALS = ["will", "can", "could", "would", "should", "might", "must"]
# Verbs: (base VB, past VBD, 3rd-singular VBZ).
TRANSITIVE = [
    ("see", "saw", "sees"), ("find", "found", "finds"), ("buy", "bought", "buys"), ("sell", "sold", "sells"),
    ("make", "made", "makes"), ("take", "took", "takes"), ("like", "liked", "likes"),
    ("watch", "watched", "watches"), ("visit", "visited", "visits"), ("paint", "painted", "paints"),
    ("open", "opened", "opens"), ("close", "closed", "closes"), ("carry", "carried", "carries"),
    ("need", "needed", "needs"), ("follow", "followed", "follows"), ("help", "helped", "helps"),
    ("call", "called", "calls"), ("write", "wrote", "writes"), ("build", "built", "builds"),
    ("clean", "cleaned", "cleans"), ("order", "ordered", "orders"), ("move", "moved", "moves"),
    ("lose", "lost", "loses"), ("read", "read", "reads"), ("describe", "described", "describes"),
]
INTRANSITIVE = [
    ("sleep", "slept", "sleeps"), ("arrive", "arrived", "arrives"), ("leave", "left", "leaves"),
    ("laugh", "laughed", "laughs"), ("wait", "waited", "waits"), ("smile", "smiled", "smiles"),
    ("run", "ran", "runs"), ("walk", "walked", "walks"), ("work", "worked", "works"),
    ("stay", "stayed", "stays"), ("return", "returned", "returns"), ("dance", "danced", "dances"),
]
DITRANSITIVE = [("give", "gave", "gives"), ("send", "sent", "sends"), ("show", "showed", "shows"),
                ("offer", "offered", "offers"), ("sell", "sold", "sells")]
SENTENTIAL = [("say", "said", "says"), ("think", "thought", "thinks"), ("know", "knew", "knows"),
              ("believe", "believed", "believes"), ("hear", "heard", "hears"), ("notice", "noticed", "notices")]
INFINITIVAL = [("want", "wanted", "wants"), ("try", "tried", "tries"), ("hope", "hoped", "hopes"),
               ("decide", "decided", "decides"), ("plan", "planned", "plans"), ("promise", "promised", "promises")]
PRONOUNS = {  # (subject form, object form, plural)
    "he": ("he", "him", False), "she": ("she", "her", False), "it": ("it", "it", False),
    "they": ("they", "them", True), "we": ("we", "us", True),
}
POSSESSIVES = ["his", "her", "their", "its", "our", "my", "your"]

# ----------------------------------------------------------------------------------------
# Rule weights (the "P" of the PCFG); each table sums to 1 after normalisation.

S_RULES = {
    "plain": 0.68, "fronted_pp": 0.1, "fronted_adverb": 0.07, "coordination": 0.1, "adverbial_clause": 0.05,
}
NP_RULES = {
    "det_noun": 0.4, "pronoun": 0.1, "name": 0.08, "possessive": 0.06, "number": 0.08, "det_number": 0.03,
    "ordinal": 0.03, "bare_plural": 0.05, "np_pp": 0.1, "relative": 0.05, "coordination": 0.02,
}
VP_RULES = {
    "transitive": 0.36, "intransitive": 0.16, "ditransitive": 0.08, "copula": 0.16, "sentential": 0.1,
    "infinitival": 0.08, "vp_clause": 0.06,
}
TENSES = {"past": 0.6, "present": 0.25, "modal": 0.15}
VOWELS = "aeio"  # no word in the lexicon starts with a 'u' or a silent 'h'


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _weighted(rng: np.random.Generator, table: dict[str, float], allowed=None) -> str:
    names = [n for n in table if allowed is None or n in allowed]
    p = np.array([table[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _leaf(tag: str, word: str) -> Tree:
    return Tree(tag, (word,))


@functools.lru_cache(maxsize=None)
def _number_word(n: int) -> str:
    from num2words import num2words

    return num2words(n, lang="en")


@functools.lru_cache(maxsize=None)
def _ordinal_word(n: int) -> str:
    from num2words import num2words

    return num2words(n, lang="en", to="ordinal")


class _Generator:
    """One sentence's worth of random choices; ``depth`` bounds the recursion."""

    def __init__(self, rng: np.random.Generator, max_depth: int = 3):
        self.rng = rng
        self.max_depth = max_depth

    # -- noun phrases: return (tree, plural, is_person)
    def np(self, depth: int, role: str = "object", allow: set[str] | None = None) -> tuple[Tree, bool, bool]:
        rng = self.rng
        allowed = set(NP_RULES) if allow is None else set(allow)
        if depth >= self.max_depth:
            allowed -= {"np_pp", "relative", "coordination"}
        rule = _weighted(rng, NP_RULES, allowed)
        if rule == "pronoun":
            subj, obj, plural = PRONOUNS[_pick(rng, list(PRONOUNS))]
            return Tree("NP", (_leaf("PRP", subj if role == "subject" else obj),)), plural, subj != "it"
        if rule == "name":
            if role == "place":
                return Tree("NP", (_leaf("NNP", _pick(rng, PLACE_NAMES)),)), False, False
            return Tree("NP", (_leaf("NNP", _pick(rng, PERSON_NAMES)),)), False, True
        if rule in ("np_pp", "relative", "coordination"):
            head, plural, person = self.np(depth + 1, role, allow={"det_noun", "name", "possessive", "bare_plural"})
            if rule == "np_pp":
                return Tree("NP", (head, self.pp(depth + 1))), plural, person
            if rule == "relative":
                return Tree("NP", (head, self.relative(depth + 1, plural, person))), plural, person
            other, _, other_person = self.np(depth + 1, role, allow={"det_noun", "name", "pronoun"})
            cc = _leaf("CC", _pick(rng, ["and", "or"]))
            return Tree("NP", (head, cc, other)), True, person and other_person
        singular, plural_form, person = _pick(rng, NOUNS)
        n_adjectives = int(rng.choice(3, p=[0.55, 0.35, 0.1]))
        adjectives = [_leaf("JJ", ADJECTIVES[i]) for i in rng.choice(len(ADJECTIVES), n_adjectives, replace=False)]
        if rule == "det_noun":
            plural = bool(rng.random() < 0.3)
            if plural:
                det = _pick(rng, ["the", "the", "these", "those", "some", "all"])
            else:
                det = _pick(rng, ["the", "the", "the", "a", "a", "this", "that", "every"])
            noun = _leaf("NNS", plural_form) if plural else _leaf("NN", singular)
            kids = [_leaf("DT", det), *adjectives, noun]
            return Tree("NP", tuple(self._fix_article(kids))), plural, person
        if rule == "possessive":
            plural = bool(rng.random() < 0.3)
            noun = _leaf("NNS", plural_form) if plural else _leaf("NN", singular)
            return Tree("NP", (_leaf("PRP$", _pick(rng, POSSESSIVES)), *adjectives[:1], noun)), plural, person
        if rule in ("number", "det_number"):
            n = int(rng.integers(2, 100)) if rng.random() < 0.9 else 1
            noun = _leaf("NN", singular) if n == 1 else _leaf("NNS", plural_form)
            kids = [_leaf("CD", _number_word(n)), *adjectives[:1], noun]
            if rule == "det_number" and n > 1:
                kids.insert(0, _leaf("DT", _pick(rng, ["the", "these", "those"])))
            return Tree("NP", tuple(kids)), n != 1, person
        if rule == "ordinal":
            n = int(rng.integers(1, 32))
            kids = [_leaf("DT", "the"), _leaf("JJ", _ordinal_word(n)), *adjectives[:1], _leaf("NN", singular)]
            return Tree("NP", tuple(kids)), False, person
        # bare plural
        return Tree("NP", (*adjectives[:1], _leaf("NNS", plural_form))), True, person

    @staticmethod
    def _fix_article(kids: list[Tree]) -> list[Tree]:
        first, following = kids[0], kids[1]
        if first.children == ("a",) and str(following.children[0])[0] in VOWELS:
            kids[0] = _leaf("DT", "an")
        return kids

    def pp(self, depth: int) -> Tree:
        prep = _pick(self.rng, PREPOSITIONS)
        role = "place" if prep in ("in", "near", "from", "at") else "object"
        allow = {"det_noun", "name", "possessive", "number", "bare_plural", "pronoun"}
        obj, _, _ = self.np(depth + 1, role, allow=allow)
        return Tree("PP", (_leaf("IN", prep), obj))

    def relative(self, depth: int, plural: bool, person: bool) -> Tree:
        wh = _leaf("WP", "who") if person else _leaf("WDT", _pick(self.rng, ["that", "which"]))
        vp = self.vp(depth + 1, plural, person, tense="past" if self.rng.random() < 0.7 else "present", simple=True)
        return Tree("SBAR", (Tree("WHNP", (wh,)), Tree("S", (vp,))))

    # -- verb phrases
    def _verb(self, forms: tuple[str, str, str], tense: str, plural: bool) -> Tree:
        base, past, third = forms
        if tense == "past":
            return _leaf("VBD", past)
        if tense == "present":
            return _leaf("VBP", base) if plural else _leaf("VBZ", third)
        return _leaf("VB", base)

    def vp(self, depth: int, plural: bool, person: bool = True, tense: str | None = None, simple: bool = False) -> Tree:
        rng = self.rng
        tense = tense or _weighted(rng, TENSES)
        if tense == "modal":
            inner = self.vp(depth, plural, person, tense="base", simple=simple)
            return Tree("VP", (_leaf("MD", _pick(rng, MODALS)), inner))
        allowed = set(VP_RULES)
        if simple or depth >= self.max_depth:
            allowed -= {"sentential", "infinitival", "vp_clause"}
        if not person:  # things do not say, hope or promise
            allowed -= {"sentential", "infinitival", "ditransitive"}
        rule = _weighted(rng, VP_RULES, allowed)
        if rule == "copula":
            if tense == "past":
                verb = _leaf("VBD", "were" if plural else "was")
            elif tense == "present":
                verb = _leaf("VBP", "are") if plural else _leaf("VBZ", "is")
            else:
                verb = _leaf("VB", "be")
            kind = rng.random()
            if kind < 0.6:
                adj = _leaf("JJ", _pick(rng, ADJECTIVES))
                if rng.random() < 0.4:
                    comp = Tree("ADJP", (_leaf("RB", _pick(rng, DEGREE_ADVERBS)), adj))
                else:
                    comp = Tree("ADJP", (adj,))
            elif kind < 0.8:
                comp = self.pp(depth)
            else:
                comp, _, _ = self.np(depth + 1, "object", allow={"det_noun"})
            return Tree("VP", (verb, comp))
        if rule == "transitive":
            kids = [self._verb(_pick(rng, TRANSITIVE), tense, plural), self.np(depth + 1)[0]]
        elif rule == "intransitive":
            kids = [self._verb(_pick(rng, INTRANSITIVE), tense, plural)]
        elif rule == "ditransitive":
            verb = self._verb(_pick(rng, DITRANSITIVE), tense, plural)
            thing, _, _ = self.np(depth + 1, "object", allow={"det_noun", "number", "possessive"})
            person_np, _, _ = self.np(depth + 1, "object", allow={"pronoun", "name"})
            if rng.random() < 0.5:
                kids = [verb, person_np, thing]
            else:
                kids = [verb, thing, Tree("PP", (_leaf("TO", "to"), person_np))]
        elif rule == "sentential":
            verb = self._verb(_pick(rng, SENTENTIAL), tense, plural)
            clause = self.clause(depth + 1)
            sbar = Tree("SBAR", (_leaf("IN", "that"), clause)) if rng.random() < 0.6 else Tree("SBAR", (clause,))
            kids = [verb, sbar]
        elif rule == "infinitival":
            verb = self._verb(_pick(rng, INFINITIVAL), tense, plural)
            inner = self.vp(depth + 1, plural, person, tense="base", simple=True)
            kids = [verb, Tree("S", (Tree("VP", (_leaf("TO", "to"), inner)),))]
        else:  # vp_clause: "left because the train was late"
            kids = [self._verb(_pick(rng, INTRANSITIVE), tense, plural), self.adverbial_clause(depth + 1)]
        if rule in ("transitive", "intransitive") and len(kids) <= 2:
            extra = rng.random()
            if extra < (0.45 if rule == "intransitive" else 0.25):
                kids.append(self.pp(depth))
            elif extra < (0.7 if rule == "intransitive" else 0.35):
                kids.append(Tree("ADVP", (_leaf("RB", _pick(rng, MANNER_ADVERBS)),)))
        return Tree("VP", tuple(kids))

    def adverbial_clause(self, depth: int) -> Tree:
        return Tree("SBAR", (_leaf("IN", _pick(self.rng, SUBORDINATORS)), self.clause(depth + 1)))

    def clause(self, depth: int) -> Tree:
        subject, plural, person = self.np(depth, "subject")
        return Tree("S", (subject, self.vp(depth, plural, person)))

    def sentence(self) -> Tree:
        rng = self.rng
        rule = _weighted(rng, S_RULES)
        period = _leaf(".", ".")
        comma = _leaf(",", ",")
        if rule == "coordination":
            left, right = self.clause(1), self.clause(1)
            return Tree("S", (left, comma, _leaf("CC", _pick(rng, ["and", "but"])), right, period))
        subject, plural, person = self.np(0, "subject")
        vp = self.vp(0, plural, person)
        if rule == "fronted_pp":
            return Tree("S", (self.pp(1), comma, subject, vp, period))
        if rule == "fronted_adverb":
            adverb = Tree("ADVP", (_leaf("RB", _pick(rng, SENTENCE_ADVERBS)),))
            return Tree("S", (adverb, comma, subject, vp, period))
        if rule == "adverbial_clause":
            return Tree("S", (self.adverbial_clause(1), comma, subject, vp, period))
        return Tree("S", (subject, vp, period))


def _capitalise_first(tree: Tree) -> Tree:
    """Upper-case the first letter of the sentence's first word (lexicon words are lower-case)."""
    first = tree.children[0]
    if isinstance(first, str):
        return Tree(tree.label, (first[:1].upper() + first[1:],) + tree.children[1:])
    return Tree(tree.label, (_capitalise_first(first),) + tree.children[1:])


def generate_tree(rng: np.random.Generator, max_depth: int = 3) -> Tree:
    """One random sentence tree (words in its leaves; first word capitalised)."""
    return _capitalise_first(_Generator(rng, max_depth).sentence())


def sentence_text(tree: Tree) -> str:
    """The tokenised sentence of a tree, Penn-Treebank style (punctuation split off)."""
    return " ".join(leaves(tree))


def in_test_split(sentence: str) -> bool:
    """Whether a sentence is held out (fixed, seed-independent, about 10 %)."""
    return cache.in_test_split("sentence:" + sentence.lower(), TEST_PERCENT)


def sample_trees(
    rng: np.random.Generator, split: str, count: int, min_words: int = 1, max_words: int = MAX_WORDS,
    exclude: set[str] | None = None,
) -> list[Tree]:
    """``count`` trees of distinct sentences of ``split`` with ``min_words..max_words`` words.

    Words are counted without punctuation tokens.
    """
    cache.check_split(split)
    seen = set(exclude or ())
    trees: list[Tree] = []
    attempts = 0
    while len(trees) < count:
        attempts += 1
        if attempts > 100 * count + 10_000:
            raise ConfigError(f"{CORPUS}: could not draw {count} distinct {split} sentences; ask for fewer")
        tree = generate_tree(rng)
        text = sentence_text(tree)
        n = sum(1 for token in text.split() if any(ch.isalnum() for ch in token))  # words, not punctuation
        if not min_words <= n <= max_words or text.lower() in seen or in_test_split(text) != (split == "test"):
            continue
        seen.add(text.lower())
        trees.append(tree)
    return trees


def available(data_dir: Path) -> str | None:
    """None when num2words (used for number words) is importable."""
    try:
        import num2words  # noqa: F401
    except ImportError:
        return "num2words is not installed: pip install num2words"
    return None


def _generate(split: str, size: int, seed: int) -> Split:
    rng = cache.make_rng(CORPUS, split, seed)
    examples = [
        Example(sentence_text(t), linearize(t), None, {"tree": to_bracketed(t)})
        for t in sample_trees(rng, split, size)
    ]
    return Split(examples=examples)


def load(data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False) -> Split:
    """Parsing examples: inputs the tokenised sentence, target its linearised tree.

    ``meta["tree"]`` holds the full tree with words in Penn-Treebank brackets.
    """
    cache.check_split(split)
    cache.check_size(size)
    size = size or NATURAL_SIZES[split]
    path = cache.cache_path(data_dir, CORPUS, split, size, seed, VERSION, "jsonl")
    return cache.cached_split(path, lambda: _generate(split, size, seed), cache.save_jsonl, cache.load_jsonl)
