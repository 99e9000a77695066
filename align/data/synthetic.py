"""A seeded, built-in demo catalog and user histories with patterns a model can learn.

Items come in ordered product lines (a book series volume 1..5; a camera, its lens, its battery; a console, a
game, its sequel) across eight categories, with complements across categories (espresso machine -> coffee beans).
Each user has a favourite category and brand; each next item continues the line of the last one, picks one of
its complements, stays with the brand or category, or is a popular item, with the weights of a `Mixture`. Reading
the history therefore predicts the next item far better than popularity does.

    from align.data.synthetic import make_demo_data
    items, interactions = make_demo_data(n_items=300, n_users=800, seed=0)
"""

import random
from dataclasses import astuple, dataclass

from align.catalog import Interaction, Item

START_TIME = 1_704_067_200  # 2024-01-01 UTC: timestamps are plausible Unix seconds
DAY = 86_400
ZIPF = 0.6  # popularity skew over product lines: real catalogs are long-tailed, but not too top-heavy

BRANDS = {
    "coffee": ["Northwind", "Copper Kettle", "Bluebird Roasters", "Atlas Bean"],
    "kitchen": ["Hearthstone", "Mesa Cookware", "Ironleaf", "Brightpan"],
    "cameras": ["Lumora", "Kestrel Optics", "Halden", "Vireo"],
    "hiking": ["Arcadia", "Summit Fox", "Trailmark", "Greyrock"],
    "books": ["Lantern House", "Quill & Oak", "Harbor Press"],
    "gaming": ["Novaplay", "Pixelforge", "Orbit Games"],
    "audio": ["Sonique", "Tidewave Audio", "Echoline"],
    "fitness": ["Corefit", "Ironpeak", "Stride Lab"],
}
# Where a category's items find complements.
COMPLEMENTS = {
    "coffee": ["kitchen"],
    "kitchen": ["coffee"],
    "cameras": ["hiking", "audio"],
    "hiking": ["cameras", "fitness"],
    "books": ["coffee", "audio"],
    "gaming": ["audio"],
    "audio": ["gaming", "fitness"],
    "fitness": ["hiking", "audio"],
}
# Product lines: ordered (title, description) templates; {slots} are filled once per line.
LINES = {
    "coffee": [
        [
            ("Grinders", "{brand} {model} Burr Grinder, {settings} Grind Settings",
             "A conical burr grinder with {settings} settings, from French press to espresso."),
            ("Whole Bean Coffee", "{brand} {origin} Whole Bean Coffee, {roast} Roast, 1 kg",
             "Single-origin beans from {origin}, {roast_lower}-roasted with notes of {note}."),
            ("Pour-Over", "{brand} Glass Pour-Over Dripper, 2 Cups",
             "A heat-proof glass dripper for a clean, bright cup."),
            ("Filters", "{brand} Unbleached Paper Filters, 100 Count", "Cone filters sized for the {brand} dripper."),
        ],
        [
            ("Espresso Beans", "{brand} {origin} Espresso Beans, {roast} Roast, 1 kg",
             "An espresso blend built on {origin} beans with notes of {note}."),
            ("Espresso Beans", "{brand} {origin} Espresso Beans, Decaf, 500 g",
             "The same {origin} blend, Swiss-water decaffeinated."),
            ("Syrups", "{brand} Vanilla Syrup, 750 ml", "A barista syrup for lattes and cold brew."),
        ],
    ],
    "kitchen": [
        [
            ("Espresso Machines", "{brand} {model} Espresso Machine, 15 Bar",
             "A compact espresso machine with a steam wand and 58 mm portafilter."),
            ("Milk Frothing", "{brand} Stainless Milk Frothing Pitcher, 600 ml",
             "A pitcher with a sharp spout for latte art."),
            ("Espresso Accessories", "{brand} Espresso Tamper, 58 mm",
             "A weighted tamper that fits the {model} portafilter."),
            ("Cleaning", "{brand} Descaling Solution, 2-Pack", "Keeps the {model} boiler free of scale."),
        ],
        [
            ("Knives", "{brand} {model} Chef's Knife, 8 Inch",
             "A forged {steel} steel chef's knife with a full tang."),
            ("Knife Sharpeners", "{brand} Whetstone Sharpener, 1000/6000 Grit",
             "A two-sided whetstone for the {model} knife."),
            ("Cutting Boards", "{brand} End-Grain Walnut Cutting Board",
             "An end-grain board that is gentle on sharp edges."),
        ],
    ],
    "cameras": [
        [
            ("Mirrorless Cameras", "{brand} {model} Mirrorless Camera Body, {mp} MP",
             "A {mp}-megapixel mirrorless body with in-body stabilisation."),
            ("Lenses", "{brand} {focal}mm f/1.8 Prime Lens for {model}",
             "A fast {focal}mm prime for the {model} mount."),
            ("Batteries", "{brand} {model} Rechargeable Battery",
             "A spare battery for the {model}, about 400 shots a charge."),
            ("Camera Cases", "{brand} {model} Leather Half Case",
             "A leather half case that keeps the {model} battery door open."),
        ],
        [
            ("Action Cameras", "{brand} {model} Action Camera, 4K",
             "A rugged 4K action camera with image stabilisation."),
            ("Action Camera Accessories", "{brand} Waterproof Housing for {model}", "Takes the {model} down to 40 m."),
            ("Action Camera Accessories", "{brand} Chest Mount Harness", "A chest harness for point-of-view footage."),
        ],
    ],
    "hiking": [
        [
            ("Trail Shoes", "{brand} {model} Trail Runner, {gender}, Size {size}",
             "A light trail shoe with a {grip} outsole."),
            ("Socks", "{brand} Merino Hiking Socks, {gender}, 3-Pack",
             "Cushioned merino socks that stay dry on long days."),
            ("Backpacks", "{brand} {model} {litres}L Daypack",
             "A {litres}-litre daypack with a ventilated back panel."),
            ("Trekking Poles", "{brand} Carbon Trekking Poles, Pair", "Three-section carbon poles with cork grips."),
        ],
        [
            ("Tents", "{brand} {model} 2-Person Backpacking Tent", "A freestanding two-person tent under 2 kg."),
            ("Tents", "{brand} {model} Tent Footprint", "A groundsheet cut to fit the {model} tent."),
            ("Sleeping Pads", "{brand} Ultralight Sleeping Pad",
             "An insulated air pad that packs to the size of a bottle."),
            ("Sleeping Bags", "{brand} Down Sleeping Bag, -5 C", "A 650-fill down bag for three-season trips."),
        ],
    ],
    "books": [
        [
            ("{genre_title} Fiction", f"{{series}}, Book {k}: {{subtitle{k}}}",
             f"Volume {k} of {{author}}'s {{genre}} series {{series}}.")
            for k in range(1, 6)
        ],
    ],
    "gaming": [
        [
            ("Consoles", "{brand} {model} Console, 1 TB", "A home console with 1 TB of storage and one controller."),
            ("Games", "{game} for {model}", "A {genre} adventure, a launch title for the {model}."),
            ("Games", "{game} II for {model}", "The sequel to {game}, picking up where it ended."),
            ("Controllers", "{brand} {model} Wireless Controller, {colour}",
             "A spare {colour_lower} controller for the {model}."),
        ],
    ],
    "audio": [
        [
            ("Headphones", "{brand} {model} Wireless Headphones, Noise Cancelling",
             "Over-ear headphones with 30 hours of battery."),
            ("Headphone Accessories", "{brand} {model} Replacement Ear Pads",
             "Memory-foam pads for the {model} headphones."),
            ("Headphone Accessories", "{brand} Hard Carrying Case for {model}",
             "A zip case that fits the {model} folded flat."),
        ],
    ],
    "fitness": [
        [
            ("Sports Watches", "{brand} {model} GPS Running Watch",
             "A running watch with GPS, heart rate and interval timers."),
            ("Heart Rate Monitors", "{brand} Chest Heart Rate Strap",
             "A chest strap that pairs with the {model} watch."),
            ("Watch Accessories", "{brand} {model} Charging Cable", "A spare magnetic cable for the {model}."),
        ],
        [
            ("Weights", "{brand} Adjustable Dumbbells, {weight} kg Pair",
             "A pair of dumbbells adjustable to {weight} kg."),
            ("Weights", "{brand} Dumbbell Stand", "A steel stand for the {brand} adjustable dumbbells."),
            ("Mats", "{brand} Exercise Mat, 10 mm", "A thick non-slip mat for floor work."),
        ],
    ],
}
SLOTS = {
    "settings": ["18", "24", "31", "40"],
    "origin": ["Ethiopia Yirgacheffe", "Colombia Huila", "Sumatra Mandheling", "Kenya Nyeri", "Guatemala Antigua"],
    "roast": ["Light", "Medium", "Dark"],
    "note": ["blueberry", "dark chocolate", "caramel", "citrus", "toasted almond"],
    "steel": ["VG-10", "German", "Damascus"],
    "mp": ["24", "26", "33", "45"],
    "focal": ["23", "35", "50", "85"],
    "gender": ["Women's", "Men's"],
    "size": ["7", "8", "9", "10", "11"],
    "grip": ["sticky rubber", "lugged", "rock-plated"],
    "litres": ["18", "22", "28", "32"],
    "genre": ["fantasy", "mystery", "science-fiction", "historical"],
    "colour": ["Black", "Arctic White", "Volcanic Red", "Ocean Blue"],
    "weight": ["20", "24", "32"],
}
MODEL_WORDS = ["Ridge", "Vista", "Nimbus", "Apex", "Drift", "Echo", "Nova", "Terra", "Pulse", "Zephyr", "Orbit",
               "Halo", "Summit", "Cascade", "Aurora", "Flint", "Sierra", "Tundra", "Comet", "Solace"]
MODEL_SUFFIXES = ["", " 2", " 3", " Pro", " X", " Lite", " Max", " S"]
SERIES_ADJECTIVES = ["Ember", "Silent", "Glass", "Iron", "Hollow", "Winter", "Crimson", "Sunken", "Wandering", "Last"]
SERIES_NOUNS = ["Crown", "Harbor", "Forest", "Tide", "Archive", "Garden", "Compass", "Citadel", "Lantern", "Orchard"]
SUBTITLES = ["The Gathering", "Ashes and Salt", "A Quiet War", "The Long Road", "Under Two Moons", "The Return",
             "Night Market", "What the River Knew", "Broken Oaths", "The Final Door", "Cold Light", "First Frost"]
AUTHORS = ["Mara Quinlan", "Tobias Reyes", "Ines Halvorsen", "Dev Raman", "Clara Whitfield", "Jonah Okafor",
           "Lena Sato", "Felix Barrow"]
GAME_WORDS = (["Starfall", "Ironvale", "Moonlit", "Skybound", "Ashen", "Neon"],
              ["Odyssey", "Legends", "Frontier", "Rising", "Chronicles", "Drift"])


@dataclass(frozen=True)
class Mixture:
    """Relative weights of how a user picks the next item; unavailable choices (end of a line) drop out."""

    series: float = 0.55  # the next item in the line of the last item
    complement: float = 0.15  # a complement of the last item, in another category
    affinity: float = 0.15  # a popular item of the last item's brand, the favourite brand or favourite category
    popular: float = 0.15  # any item, by popularity


def make_demo_data(
    n_items: int = 300,
    n_users: int = 800,
    seed: int = 0,
    min_len: int = 5,
    max_len: int = 12,
    mixture: Mixture = Mixture(),
) -> tuple[list[Item], list[Interaction]]:
    """A demo catalog and its users' interactions, identical for a given seed.

    Returns:
        items: `n_items` Items with ids "i0000".., in line order.
        interactions: (user_id, item_id, unix seconds) for `n_users` users with `min_len`..`max_len` items each,
            grouped by user and in time order.
    """
    if min(astuple(mixture)) < 0 or not sum(astuple(mixture)):
        raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {mixture}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    rng = random.Random(seed)
    items, lines, categories = _make_items(n_items, rng)
    catalog = _Catalog(items, lines, categories, rng)
    interactions: list[Interaction] = []
    for u in range(n_users):
        user = f"u{u:04d}"
        history = catalog.user_history(rng.randint(min_len, max_len), mixture, rng)
        time = START_TIME + rng.uniform(0, 300 * DAY)
        for item in history:
            interactions.append((user, items[item].item_id, int(time)))
            time += 3600 + rng.expovariate(1 / (4 * DAY))
    return items, interactions


def _make_items(n_items: int, rng: random.Random) -> tuple[list[Item], list[list[int]], list[str]]:
    """Items built line by line over the categories in turn; returns items, lines (item indices) and categories.

    A title drawn again (a brand's filters, a second line of the same model) is the same item: accessories are
    shared by the lines of their brand, as in a real catalog.
    """
    items: list[Item] = []
    lines: list[list[int]] = []
    categories: list[str] = []
    index_of_title: dict[str, int] = {}
    names = list(BRANDS)
    for attempt in range(100 * n_items):
        if len(items) == n_items:
            break
        category = names[attempt % len(names)]
        templates = rng.choice(LINES[category])
        slots = _line_slots(category, rng)
        line = []
        for subcategory, title, description in templates[: rng.randint(2, len(templates))]:
            title = title.format(**slots)
            if title not in index_of_title:
                if len(items) == n_items:
                    break
                index_of_title[title] = len(items)
                item = Item(
                    item_id=f"i{len(items):04d}",
                    title=title,
                    description=description.format(**slots),
                    brand=slots["brand"],
                    categories=f"{category.title()} > {subcategory.format(**slots)}",
                )
                items.append(item)
                categories.append(category)
            line.append(index_of_title[title])
        lines.append(line)
    else:
        raise ValueError(f"n_items={n_items} is more than the demo word lists can name; use fewer items")
    return items, lines, categories


def _line_slots(category: str, rng: random.Random) -> dict[str, str]:
    slots = {name: rng.choice(values) for name, values in SLOTS.items()}
    slots["roast_lower"], slots["colour_lower"] = slots["roast"].lower(), slots["colour"].lower()
    slots["brand"] = rng.choice(BRANDS[category])
    slots["model"] = rng.choice(MODEL_WORDS) + rng.choice(MODEL_SUFFIXES)
    slots["series"] = f"The {rng.choice(SERIES_ADJECTIVES)} {rng.choice(SERIES_NOUNS)}"
    slots["game"] = f"{rng.choice(GAME_WORDS[0])} {rng.choice(GAME_WORDS[1])}"
    # A series name drawn again is the same series: same author, genre and volumes (a str seed is stable).
    book_rng = random.Random(slots["series"])
    slots["author"], slots["genre"] = book_rng.choice(AUTHORS), book_rng.choice(SLOTS["genre"])
    slots["genre_title"] = slots["genre"].title()
    for k, subtitle in enumerate(book_rng.sample(SUBTITLES, 5), 1):
        slots[f"subtitle{k}"] = subtitle
    return slots


class _Catalog:
    """Indices for sampling: line successor, complements, brand/category pools and popularity."""

    def __init__(self, items: list[Item], lines: list[list[int]], categories: list[str], rng: random.Random) -> None:
        self.next_in_line: dict[int, list[int]] = {}
        for line in lines:
            for a, b in zip(line, line[1:], strict=False):
                if b not in self.next_in_line.setdefault(a, []):
                    self.next_in_line[a].append(b)
        # Popularity: Zipf over lines in random order, decaying along each line (entry products sell most).
        line_rank = list(range(len(lines)))
        rng.shuffle(line_rank)
        self.weights = [0.0] * len(items)
        for line, rank in zip(lines, line_rank, strict=True):
            for step, item in enumerate(line):
                self.weights[item] += (rank + 1) ** -ZIPF * 0.6**step
        self.categories = categories
        self.brands = [item.brand for item in items]
        self.by_category = _group(categories)
        self.by_brand = _group(self.brands)
        self.complements = [self._pick_complements(i, rng) for i in range(len(items))]

    def _pick_complements(self, item: int, rng: random.Random) -> list[int]:
        pool = [j for category in COMPLEMENTS[self.categories[item]] for j in self.by_category.get(category, [])]
        return rng.sample(pool, min(2, len(pool)))

    def popular(self, pool: list[int], rng: random.Random) -> int:
        return rng.choices(pool, weights=[self.weights[i] for i in pool])[0]

    def user_history(self, length: int, mixture: Mixture, rng: random.Random) -> list[int]:
        everything = list(range(len(self.weights)))
        favourite = self.popular(everything, rng)  # popular products make popular favourite categories and brands
        favourite_category = self.by_category[self.categories[favourite]]
        favourite_brand = self.by_brand[self.brands[favourite]]
        history = [self.popular(favourite_category, rng)]
        while len(history) < length:
            last = history[-1]
            choices = {
                "series": mixture.series if last in self.next_in_line else 0.0,
                "complement": mixture.complement if self.complements[last] else 0.0,
                "affinity": mixture.affinity,
                "popular": mixture.popular,
            }
            if not any(choices.values()):
                choices["popular"] = 1.0  # e.g. series only, at the end of a line
            kind = rng.choices(list(choices), weights=list(choices.values()))[0]
            if kind == "series":
                history.append(rng.choice(self.next_in_line[last]))
            elif kind == "complement":
                history.append(rng.choice(self.complements[last]))
            elif kind == "affinity":
                pool = rng.choice([self.by_brand[self.brands[last]], favourite_brand, favourite_category])
                history.append(self.popular(pool, rng))
            else:
                history.append(self.popular(everything, rng))
        return history


def _group(keys: list[str]) -> dict[str, list[int]]:
    """key -> indices of the items with that key, in item order."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups
