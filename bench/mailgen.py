"""A realistic mail generator for bench/semantic.py: the kinds of mail a person's mailbox holds
(bills, travel, deliveries, work threads, newsletters, notifications), each kind written several
ways with names, amounts and dates filled in, so that mail about one thing does not always use
the same words. Deterministic for a seed.

Each generated message carries its kind: the labelled query set of bench/semantic.py asks for
the "needle" kinds in words a person would use and checks which needles come back.
"""

import random

PEOPLE = ["Dora Diaz", "Erin Okafor", "Frank Li", "Grace Novak", "Hiro Tanaka", "Ines Costa", "Jan Kowalski",
          "Kemal Aydin", "Lena Fischer", "Mia Rossi", "Noah Berg", "Olga Petrova", "Pablo Ruiz", "Quinn Shaw"]
COMPANIES = ["Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Acme", "Hooli", "Vandelay", "Stark", "Wayne"]
CITIES = ["Lisbon", "Munich", "Oslo", "Vienna", "Prague", "Dublin", "Madrid", "Rome", "Krakow", "Lyon"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]

# Filler: the bulk of a mailbox. Words overlap with the needles on purpose (account, order,
# payment, server, meeting), so a word search finds many messages and must rank them.
FILLER = {
    "newsletter": (["{company} Weekly: {n} ideas for your team", "This month at {company}", "Your {month} digest"],
                   ["Welcome to this edition. We cover product updates, a customer story from {city} and tips "
                    "for managing your account settings. Read more on our blog. Unsubscribe at any time.",
                    "Top stories: remote work in {city}, new pricing for teams, and an interview with {person}. "
                    "Thanks for reading and see you next week."]),
    "team": (["Re: notes from {month} planning", "Agenda for Thursday", "Quick question about the roadmap"],
             ["Hi all, thanks for the meeting today. Action items: {person} drafts the proposal, the team "
              "reviews the design next week, and we revisit the schedule after the release.",
              "Can we move the sync to 3 pm? I have a conflict. Also please add the hiring plan and the "
              "onboarding checklist to the agenda."]),
    "notify": (["[{company}] New sign-in to your account", "Your order #{n} has been received",
                "Payment method updated", "{person} commented on your document"],
               ["We noticed a new sign-in from {city}. If this was you, no action is needed. Otherwise review "
                "your security settings.",
                "Thank you for your order. We will send another email when it ships. Order total: {amount}.",
                "{person} left a comment: looks good to me, just fix the numbers in section 3."]),
    "social": (["{person} invited you to a party", "Photos from the weekend", "Happy birthday!"],
               ["We are having people over on Saturday evening, bring something to drink if you like. "
                "Kids welcome, the garden is big enough.",
                "Here are the pictures from the hike near {city}. The one at the lake came out great."]),
    "ops": (["[alert] disk usage above 80% on db-{n}", "Deploy finished: release {n}", "CI build #{n} passed"],
            ["Host db-{n} reports disk usage at 83%. Consider cleaning old logs or growing the volume.",
             "The deployment of release {n} to production finished in 4 minutes. No errors reported."]),
}

# Needles: what the labelled queries look for. Each kind written several ways, often without the
# words a person would search with.
NEEDLES = {
    "hosting_bill": (["Your {month} statement from {company} Cloud", "{company} Cloud: payment received",
                      "Receipt for your virtual servers"],
                     ["The amount of {amount} for your virtual private servers and block storage was charged to "
                      "your card ending 4242. Thank you for hosting with us.",
                      "We received your payment of {amount} for compute instances and bandwidth in {month}. "
                      "A PDF receipt is attached."]),
    "flight": (["Booking confirmed: {city} to {city2}", "Your e-ticket {code}", "Check-in is now open"],
               ["Your reservation {code} is confirmed. Departure {month} 12 at 07:35, seat 14C, one checked "
                "bag included. Boarding closes 20 minutes before departure.",
                "Online check-in for your trip from {city} to {city2} is open. Have your passport ready and "
                "download the boarding pass to your phone."]),
    "password_reset": (["Reset your password", "Change your sign-in details", "Account recovery request"],
                       ["Someone asked to change the password for your {company} account. Follow the link within "
                        "one hour, or ignore this email if it was not you.",
                        "Use this code to recover access to your account: {n}. It expires in 10 minutes."]),
    "parcel": (["Your parcel is on its way", "Delivery attempt failed", "Package {code} out for delivery"],
               ["Good news: the courier picked up your package and expects to drop it off tomorrow between "
                "9 and 13. Track it with code {code}.",
                "We tried to drop off your parcel today but nobody was home. It is waiting at the pickup point "
                "in {city} for 7 days."]),
    "job_offer": (["Offer letter: Senior Engineer at {company}", "We would like you to join {company}",
                   "Next steps after your interviews"],
                  ["We are delighted to offer you the position of Senior Engineer. Your starting salary will be "
                   "{amount} per year, with a start date in {month}. Please sign and return by Friday.",
                   "The panel enjoyed meeting you and we want to extend an offer. The recruiter will call you "
                   "about compensation and a start date."]),
    "rent": (["Rent increase from {month}", "Your lease renewal", "Message from your landlord"],
             ["Dear tenant, from {month} the monthly rent for the flat will be {amount}, in line with the index "
              "clause of your tenancy agreement.",
              "Your tenancy ends in {month}. Please tell us whether you want to renew the lease for another year."]),
    "doctor": (["Appointment reminder: Dr. {surname}", "Your lab results are ready", "Rescheduling your visit"],
               ["This is a reminder of your appointment at the clinic on {month} 4 at 9:40. Please bring your "
                "insurance card and arrive 10 minutes early.",
                "The results of your blood test are available in the patient portal. Dr. {surname} will discuss "
                "them at your next visit."]),
    "tax": (["Your {month} tax assessment", "Refund of {amount} approved", "Documents missing for your return"],
            ["The revenue office has processed your income tax return. You will receive a refund of {amount} "
             "within 3 weeks.",
             "To finish your annual return we still need the statements from your bank and your employer."]),
    "conference": (["Your talk was accepted at {company}Conf", "Speaker information for {company}Conf",
                    "Call for papers: results"],
                   ["Congratulations! The program committee accepted your proposal for a 30-minute session. "
                    "We cover travel and two hotel nights in {city}.",
                    "Speakers, please upload your slides by {month} 1. The venue has HDMI and a clicker."]),
    "car_repair": (["Your car is ready for pickup", "Quote for the repair of {plate}", "Service appointment"],
                   ["The garage finished the brake pads and the oil change on your vehicle {plate}. Total: "
                    "{amount}. You can collect it after 4 pm.",
                    "The mechanic found a worn timing belt. Replacing it costs {amount}; shall we go ahead?"]),
}
# Exact-word needles: a rare token a person remembers and types as is.
EXACT = {
    "kowalski_contract": (["Contract draft from Jan Kowalski", "Kowalski: signed contract"],
                          ["Attached is the draft contract. Jan Kowalski will review clause 7 on Monday.",
                           "Here is the signed copy. Regards, Jan Kowalski"]),
    "po_number": (["Purchase order PO-88213", "PO-88213 approved"],
                  ["Please process purchase order PO-88213 for 40 monitors.",
                   "Finance approved PO-88213; the supplier ships next week."]),
    "zanzibar": (["Zanzibar trip ideas", "Photos from Zanzibar"],
                 ["Thinking about Zanzibar in the spring: beaches, Stone Town and a spice tour.",
                  "Back from Zanzibar! The snorkelling was amazing."]),
    "hetzner_ticket": (["Hetzner support ticket #551203", "Re: Hetzner ticket 551203"],
                       ["Your ticket 551203 about the dedicated server reset was answered by Hetzner support.",
                        "Hetzner support closed ticket 551203 after the hardware swap."]),
}


def _fill(template: str, rng: random.Random) -> str:
    person = rng.choice(PEOPLE)
    return template.format(
        person=person, surname=person.split()[-1], company=rng.choice(COMPANIES), city=rng.choice(CITIES),
        city2=rng.choice(CITIES), month=rng.choice(MONTHS), n=rng.randint(100, 99999),
        amount=f"{rng.choice(['$', '€', '£'])}{rng.randint(10, 9000)}.{rng.randint(0, 99):02d}",
        code="".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", k=6)),
        plate=f"{rng.choice('BMKHS')}-{rng.choice('ABCDEF')}{rng.choice('XYZ')} {rng.randint(100, 9999)}")


def message(kind: str, rng: random.Random, table=None) -> dict:
    """One message of `kind` as subject, body, sender."""
    table = table or {**FILLER, **NEEDLES, **EXACT}
    subjects, bodies = table[kind]
    body = _fill(rng.choice(bodies), rng)
    subject = _fill(rng.choice(subjects), rng)
    if rng.random() < 0.15:  # a reply quoting the mail, and a signature: both cut before embedding
        body = f"Thanks, noted.\n\n-- \n{rng.choice(PEOPLE)}\n\nOn Monday someone wrote:\n> " + body
        subject = "Re: " + subject
    elif rng.random() < 0.3:  # a signature only
        body += f"\n\n--\n{rng.choice(PEOPLE)}\n{rng.choice(COMPANIES)} Ltd, {rng.choice(CITIES)}"
    sender = rng.choice(PEOPLE)
    return {"kind": kind, "subject": subject, "body": body,
            "sender_name": sender, "sender_address": sender.lower().replace(" ", ".") + "@example.test"}


def filler(count: int, seed: int = 7):
    rng = random.Random(seed)
    kinds = sorted(FILLER)
    for _ in range(count):
        yield message(rng.choice(kinds), rng, FILLER)


def needles(per_kind: int = 5, seed: int = 11):
    rng = random.Random(seed)
    for kind in sorted(NEEDLES) + sorted(EXACT):
        for _ in range(per_kind):
            yield message(kind, rng)


# The labelled queries: (kind, query, exact-word?). Written as a person types them, before looking
# at the generated mail.
QUERIES = [
    ("hosting_bill", "invoice from the hosting company", False),
    ("hosting_bill", "how much did I pay for servers", False),
    ("flight", "plane ticket", False),
    ("flight", "my flight booking", False),
    ("password_reset", "forgot password email", False),
    ("password_reset", "link to reset login", False),
    ("parcel", "where is my package delivery", False),
    ("parcel", "courier shipment tracking", False),
    ("job_offer", "job offer salary", False),
    ("job_offer", "did I get the job", False),
    ("rent", "landlord rent", False),
    ("rent", "apartment lease", False),
    ("doctor", "doctor appointment", False),
    ("doctor", "blood test results", False),
    ("tax", "tax refund", False),
    ("tax", "income tax return paperwork", False),
    ("conference", "conference talk accepted", False),
    ("conference", "slides for my presentation", False),
    ("car_repair", "car garage repair bill", False),
    ("car_repair", "mechanic brakes", False),
    ("kowalski_contract", "Kowalski", True),
    ("kowalski_contract", "Kowalski contract", True),
    ("po_number", "PO-88213", True),
    ("zanzibar", "zanzibar", True),
    ("hetzner_ticket", "Hetzner", True),
    ("hetzner_ticket", "551203", True),
]
