"""A plain one-table data set of generated German persons, made without crmgen: Faker's de_DE
persons (names, addresses, phones, e-mails, birth dates) with a share of corrupted duplicates, the
kind of set users build to try a matcher (issue 27 measures the end to end on it beside Splink 5).

Writes SQL for psql to stdout: a table `people` (one source, its own column names and formats) and
a table `truth (source, source_key, person_id, household_id)` in the layout benches/persons.sh's
quality queries read (every person is their own household here).

A duplicate copies its person and then takes one to three corruptions, drawn independently:
typos (insert, delete, substitute, swap), umlauts written out (ü -> ue, ß -> ss), capitals, first
and last name swapped, a nickname-free short first name (initial), a changed or missing e-mail,
the phone in another written form or missing, Straße / Str., a missing house number, a move to
another address, a birth date with a typo, day and month swapped or missing.

    python benches/plain_persons.py --rows N [--seed S] [--duplicates 0.2]
"""

import argparse
import random
import sys

from faker import Faker

UMLAUTS = {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}
FREE_MAIL = ["web.de", "gmx.de", "gmail.com", "t-online.de", "freenet.de", "yahoo.de", "outlook.de", "posteo.de"]
LETTERS = "abcdefghijklmnopqrstuvwxyzäöüß"


def typo(rng: random.Random, s: str) -> str:
    if len(s) < 3:
        return s
    i = rng.randrange(1, len(s))
    kind = rng.randrange(4)
    if kind == 0:
        return s[:i] + rng.choice(LETTERS) + s[i:]
    if kind == 1:
        return s[:i] + s[i + 1 :]
    if kind == 2:
        return s[:i] + rng.choice(LETTERS) + s[i + 1 :]
    if i + 1 < len(s):
        return s[:i] + s[i + 1] + s[i] + s[i + 2 :]
    return s[:-1]


def write_out_umlauts(s: str) -> str:
    return "".join(UMLAUTS.get(c, c) for c in s)


def ascii_local(s: str) -> str:
    return write_out_umlauts(s.lower()).replace(" ", "").replace("-", "")


def phone_digits(fake: Faker) -> str:
    """A German number as national digits, 0 first (Faker's written forms are parsed back)."""
    while True:
        digits = "".join(c for c in fake.phone_number() if c.isdigit())
        if digits.startswith("490"):
            digits = digits[2:]
        elif digits.startswith("49"):
            digits = "0" + digits[2:]
        if digits.startswith("0") and 9 <= len(digits) <= 12:
            return digits


def written_phone(rng: random.Random, digits: str) -> str:
    area, rest = digits[:4], digits[4:]
    forms = [
        f"{area} {rest}",
        f"{area}/{rest}",
        f"+49 {area[1:]} {rest}",
        f"+49{digits[1:]}",
        f"0049 {area[1:]} {rest}",
        f"({area}) {rest[:3]} {rest[3:]}",
        f"{area}-{rest}",
        digits,
    ]
    return rng.choice(forms)


def person(fake: Faker, rng: random.Random, pid: int) -> dict:
    female = rng.random() < 0.5
    first = fake.first_name_female() if female else fake.first_name_male()
    last = fake.last_name()
    dob = fake.date_of_birth(minimum_age=18, maximum_age=90) if rng.random() < 0.85 else None
    street = fake.street_name()
    if rng.random() < 0.5:
        local = f"{ascii_local(first)}.{ascii_local(last)}"
    elif rng.random() < 0.5:
        local = f"{ascii_local(first)[0]}{ascii_local(last)}{rng.randrange(1, 99)}"
    else:
        local = f"{ascii_local(last)}{dob.year % 100 if dob else rng.randrange(10, 99)}"
    return {
        "person_id": pid,
        "first_name": first,
        "last_name": last,
        "email": f"{local}@{rng.choice(FREE_MAIL)}" if rng.random() < 0.8 else None,
        "phone": phone_digits(fake) if rng.random() < 0.7 else None,
        "street": street,
        "house_number": fake.building_number(),
        "postcode": fake.postcode(),
        "city": fake.city(),
        "birth_date": dob,
    }


def corrupt(fake: Faker, rng: random.Random, row: dict) -> dict:
    row = dict(row)
    for _ in range(rng.choice([1, 1, 2, 2, 3])):
        kind = rng.randrange(14)
        if kind == 0:
            row["first_name"] = typo(rng, row["first_name"])
        elif kind == 1:
            row["last_name"] = typo(rng, row["last_name"])
        elif kind == 2:
            row["first_name"], row["last_name"] = write_out_umlauts(row["first_name"]), write_out_umlauts(row["last_name"])
            row["street"] = write_out_umlauts(row["street"])
        elif kind == 3:
            row["last_name"] = row["last_name"].upper()
        elif kind == 4:
            row["first_name"], row["last_name"] = row["last_name"], row["first_name"]
        elif kind == 5:
            row["first_name"] = row["first_name"][0] + "."
        elif kind == 6 and row["email"]:
            row["email"] = rng.choice([row["email"].upper(), row["email"].capitalize(), None])
        elif kind == 7:
            row["email"] = f"{ascii_local(row['last_name'])}{rng.randrange(100, 999)}@{rng.choice(FREE_MAIL)}"
        elif kind == 8:
            row["phone"] = None if rng.random() < 0.4 else row["phone"]
        elif kind == 9:
            row["street"] = row["street"].replace("straße", "str.").replace("Straße", "Str.")
            row["house_number"] = None if rng.random() < 0.3 else row["house_number"]
        elif kind == 10:
            row["street"], row["house_number"] = fake.street_name(), fake.building_number()
            row["postcode"], row["city"] = fake.postcode(), fake.city()
        elif kind == 11 and row["birth_date"]:
            d = row["birth_date"]
            if d.day <= 12 and d.day != d.month and rng.random() < 0.5:
                row["birth_date"] = d.replace(month=d.day, day=d.month)
            else:
                row["birth_date"] = d.replace(year=d.year + rng.choice([-10, -1, 1, 10]), day=min(d.day, 28))
        elif kind == 12:
            row["birth_date"] = None
        elif kind == 13:
            row["city"] = typo(rng, row["city"])
    return row


def copy_value(v) -> str:
    if v is None:
        return "\\N"
    return str(v).replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--rows", type=int, required=True)
    args.add_argument("--seed", type=int, default=1)
    args.add_argument("--duplicates", type=float, default=0.2)
    opts = args.parse_args()
    rng = random.Random(opts.seed)
    fake = Faker("de_DE")
    fake.seed_instance(opts.seed)
    out = sys.stdout
    out.write(
        "CREATE TABLE people (id bigint PRIMARY KEY, vorname text, nachname text, email text, telefon text,\n"
        "  strasse text, hausnummer text, plz text, ort text, geburtsdatum date);\n"
        "CREATE TABLE truth (source text, source_key text, person_id bigint, household_id bigint);\n"
        "COPY people FROM stdin;\n"
    )
    # Duplicates of uniformly drawn persons, then the rows in random order, as a CRM holds them.
    originals = [person(fake, rng, pid) for pid in range(1, round(opts.rows * (1 - opts.duplicates)) + 1)]
    rows = originals + [corrupt(fake, rng, rng.choice(originals)) for _ in range(opts.rows - len(originals))]
    rng.shuffle(rows)
    truth: list[tuple[int, int]] = []
    for record_id, row in enumerate(rows, start=1):
        phone = written_phone(rng, row["phone"]) if row["phone"] else None
        fields = [record_id, row["first_name"], row["last_name"], row["email"], phone, row["street"],
                  row["house_number"], row["postcode"], row["city"], row["birth_date"]]
        out.write("\t".join(copy_value(v) for v in fields) + "\n")
        truth.append((record_id, row["person_id"]))
    out.write("\\.\nCOPY truth FROM stdin;\n")
    for record_id, pid in truth:
        out.write(f"people\t{record_id}\t{pid}\t{pid}\n")
    out.write("\\.\nANALYZE people;\nANALYZE truth;\n")


if __name__ == "__main__":
    main()
