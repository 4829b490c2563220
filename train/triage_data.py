"""Training messages for triage's learned layer: emergencies as patients word them, and the near-misses around them.

    from train.triage_data import synthetic_messages
    rows = synthetic_messages(seed=0)      # [{"text", "label"}]: label = an emergency kind or "none"

Written for this project from clinical red-flag lists (NHS "when to call 999", MedlinePlus "recognizing medical
emergencies"), in the voice of patient messages (GenMedGPT-5k's openings: a story, a relative, an age, lower case,
a question at the end). Phrases are combined at random; none of the benchmark's held-out messages
(data/triage/heldout.jsonl, written separately before training) is among them.
"""

from __future__ import annotations

import random

WHO = ["i", "my dad", "my mom", "my husband", "my wife", "my son", "my daughter", "my grandmother", "my grandpa",
       "my friend", "my partner", "my brother", "my neighbour", "my sister", "my uncle"]
AGES = ["", " (72)", " who is 65", ", 58,", " (45)", " age 80", " who's 34", " (67 years old)"]
ASKS = ["what should i do", "is this serious", "should we wait until morning?", "can i just take an aspirin?",
        "is it ok to sleep it off", "do we need to go in", "what could this be?", "help", "please answer fast",
        "what do i do now", "should i be worried?", "can this wait for my gp appointment next week?", ""]
WHEN = ["right now", "for the last 20 minutes", "since this morning", "an hour ago", "just now", "tonight",
        "for about 30 min", "since we got home", ""]

EMERGENCY: dict[str, list[str]] = {
    "chest_pain_cardiac": [
        "{who} has a crushing pressure in the chest that started climbing stairs and didn't stop after resting",
        "{who} says it feels like an elephant is sitting on the chest and is sweating a lot",
        "chest tightness going down the left arm and into the jaw",
        "{who} has chest pain and can barely get words out",
        "heavy squeezing in the middle of the chest, feel sick and clammy",
        "{who} had chest tightness and then fainted in the kitchen",
        "pain in the chest spreading to the back and shoulder, short of breath",
        "chest feels tight and {who} is grey and sweaty",
        "my heart is pounding with chest pain and i nearly blacked out",
        "squeezing chest pain when walking the dog that won't go away sitting down",
    ],
    "stroke_signs": [
        "{who}'s face looks droopy on one side and the words are coming out wrong",
        "{who} suddenly can't lift the right arm and is talking gibberish",
        "{who} is slurring and one side of the mouth is hanging down",
        "{who} suddenly can't see out of one eye and the left leg is weak",
        "sudden confusion, {who} doesn't know where they are and can't find words",
        "the worst headache ever came on like a thunderclap",
        "half of {who}'s body went numb all of a sudden",
    ],
    "anaphylaxis": [
        "{who} ate something with nuts and the lips and tongue are swelling up",
        "after a wasp sting {who} has hives everywhere and a tight throat",
        "throat feels like it's closing after taking the new antibiotic",
        "{who} is wheezing and covered in hives after eating shrimp",
        "face swelling and trouble swallowing after a bee sting",
    ],
    "breathing": [
        "{who}'s lips are going blue",
        "{who} can't catch a breath and can't finish a sentence",
        "the inhaler isn't working and {who} is gasping",
        "my baby's ribs are sucking in with every breath",
        "{who} is struggling to breathe and looks grey",
    ],
    "suicide_self_harm": [
        "i don't want to be here anymore and i've been thinking about how to end it",
        "i've saved up pills and i think tonight is the night",
        "everyone would be better off without me, i keep thinking about ending things",
        "i can't go on like this, i want to go to sleep and never wake up",
        "i have been cutting myself and the thoughts are getting worse",
        "i've written goodbye letters to my family",
        "i keep thinking about jumping off the bridge near my house",
        "{who} told me they have a plan to take their own life",
    ],
    "severe_bleeding": [
        "{who} cut the leg with a saw and blood is spurting out",
        "the bleeding keeps going even though i've pressed on it for 20 minutes",
        "blood is soaking through the towels, it won't stop",
        "deep cut on the wrist, blood pumping out",
        "{who} is bleeding heavily after the fall and looks pale",
    ],
    "gi_bleeding": [
        "{who} threw up something that looks like coffee grounds",
        "black tarry poop and {who} feels dizzy and weak",
        "{who} is vomiting blood",
        "lots of blood coming from the bottom and {who} feels faint",
        "the vomit is dark brown like coffee and {who} is very pale",
    ],
    "head_injury": [
        "{who} hit the head falling off a ladder and has vomited twice and is very sleepy",
        "after banging the head {who} is confused and keeps asking the same questions",
        "{who} fell and hit the head, now one pupil looks bigger than the other",
        "head knock playing rugby and now throwing up and drowsy",
        "{who} hit the head on the ice and is hard to wake up",
        "clear fluid coming out of the nose after a fall on the head",
    ],
    "poisoning_overdose": [
        "{who} swallowed a whole bottle of paracetamol",
        "my toddler drank some of the bleach",
        "my 2 year old might have swallowed a button battery",
        "{who} took double the insulin by mistake and is shaky and sweaty",
        "i took way too many of my sleeping tablets",
        "found {who} with empty pill packets and very drowsy",
    ],
    "infant_fever": [
        "my 6 week old has a temperature of 38.3",
        "my newborn feels hot and won't feed",
        "2 month old baby with a fever and very floppy",
        "my 5 week old is burning up and sleepy",
    ],
    "seizure_unconscious": [
        "{who} has been fitting for over 5 minutes",
        "{who} had a seizure and won't wake up properly",
        "{who} collapsed and isn't responding",
        "first ever seizure, {who} is still shaking",
        "{who} passed out and is not waking up",
    ],
    "meningitis_signs": [
        "{who} has a high fever, a stiff neck and light hurts the eyes",
        "rash that doesn't fade when i press a glass on it and a fever",
        "fever, bad headache and can't bend the neck",
    ],
    "sepsis": [
        "{who} has a fever, is confused and the skin looks blotchy and mottled",
        "very cold and shivery, hasn't peed all day and is acting strange",
        "after the operation {who} has a high fever, racing heart and is very unwell",
    ],
    "pregnancy": [
        "i'm 7 weeks pregnant with terrible pain on one side and shoulder tip pain",
        "pregnant and bleeding heavily with cramps",
        "34 weeks pregnant and the baby hasn't moved all day",
    ],
    "diabetic": [
        "{who} is diabetic, vomiting, breath smells fruity and breathing fast and deep",
        "type 1 diabetic, blood sugar reads HI and {who} is confused",
    ],
    "abdominal_torsion": [
        "sudden terrible pain in the testicle that started an hour ago",
        "my son woke up with severe pain in his balls and is vomiting",
        "sudden severe belly pain and the stomach is hard as a board",
        "agonising abdominal pain, can't stand up straight",
    ],
    "choking": [
        "{who} is choking on food and can't cough or speak",
        "my baby swallowed something and is choking",
    ],
}

NEAR_MISS = [
    "i had a sharp chest pain for a second last month after a cold, it went away",
    "what are the warning signs of a heart attack",
    "my chest muscles are sore after bench press at the gym, hurts when i press on it",
    "i get heartburn after spicy food, is that bad for my heart",
    "{who} had a stroke 3 years ago, what diet helps prevent another one",
    "how do i know if someone is having a stroke?",
    "what does it mean when your face twitches",
    "i'm allergic to peanuts, which foods should i avoid",
    "mild hay fever, sneezing and itchy eyes every spring",
    "can a bee sting cause a big swollen red patch that lasts a few days",
    "i get a bit short of breath running for the bus, i'm unfit",
    "{who} has asthma, how often should the preventer inhaler be used",
    "i'm writing an essay about depression, what are the warning signs in teenagers",
    "i feel sad sometimes since the divorce, how can i sleep better",
    "what is the suicide rate among doctors",
    "i had a nosebleed this morning, it stopped after 10 minutes",
    "a small cut on my finger from cooking, it stopped bleeding, do i need a tetanus shot",
    "black stool since i started iron tablets, otherwise i feel fine",
    "i bumped my head on a cupboard two days ago and feel fine, just a small bump",
    "how long after a concussion can {who} play football again",
    "i took two ibuprofen and then realised i'd had one earlier, is that ok",
    "what is a safe dose of paracetamol for a teenager",
    "my 4 year old has a temperature of 38 but is playing and eating normally",
    "when should my baby get the first vaccines",
    "{who} had a seizure years ago, can they drive now",
    "what causes a stiff neck after sleeping wrong",
    "my skin has a rash after a new washing powder",
    "i have had a headache for a week, paracetamol helps",
    "how can i lower my cholesterol",
    "what are the side effects of metformin",
    "is it normal to have cramps in early pregnancy",
    "i'm diabetic, what snacks are good",
    "my stomach hurts a bit after eating too much",
    "how do i get rid of a tension headache",
    "{who} has high blood pressure, which salt substitute is safe",
    "can anxiety cause a fast heartbeat",
    "my knee hurts when i run",
    "what are the symptoms of gout",
    "how is pneumonia treated",
    "is it safe to take vitamin d every day",
]


def _fill(template: str, rng: random.Random) -> str:
    who = rng.choice(WHO)
    text = template.format(who=who + (rng.choice(AGES) if who != "i" else ""))
    return text


def patient_style(core: str, rng: random.Random) -> str:
    """A phrase in a patient's message: a greeting sometimes, a time, a question, casing and punctuation varied."""
    parts = [rng.choice(["", "hi ", "hello doctor, ", "please help ", "urgent: ", "hey "]) + core]
    when = rng.choice(WHEN)
    if when and rng.random() < 0.5:
        parts.append(when)
    ask = rng.choice(ASKS)
    text = " ".join(parts) + (rng.choice([". ", ", ", " ", "!! "]) + ask if ask else "")
    if rng.random() < 0.4:
        text = text[:1].upper() + text[1:]
    return text.strip()


def synthetic_messages(seed: int = 0, per_phrase: int = 6) -> list[dict]:
    """Emergency messages labelled by kind and near-misses labelled "none", each phrase in several voices."""
    rng = random.Random(seed)
    rows = []
    for kind, phrases in EMERGENCY.items():
        for p in phrases:
            rows += [{"text": patient_style(_fill(p, rng), rng), "label": kind} for _ in range(per_phrase)]
    for p in NEAR_MISS:
        rows += [{"text": patient_style(_fill(p, rng), rng), "label": "none"} for _ in range(per_phrase)]
    return rows
