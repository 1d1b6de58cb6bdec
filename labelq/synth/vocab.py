"""Vocabulary of the synthetic shop: products, queries, payments, places."""

from __future__ import annotations

PRODUCTS: dict[str, str] = {
    # label text -> category
    "running shoes": "shoes", "hiking boots": "shoes", "leather sandals": "shoes",
    "wireless headphones": "electronics", "smart watch": "electronics",
    "bluetooth speaker": "electronics", "phone charger": "electronics", "laptop stand": "electronics",
    "yoga mat": "sports", "tennis racket": "sports", "dumbbell set": "sports", "bike helmet": "sports",
    "winter jacket": "clothing", "denim jeans": "clothing", "wool scarf": "clothing",
    "rain coat": "clothing", "coffee maker": "kitchen", "chef knife": "kitchen",
    "blender": "kitchen", "frying pan": "kitchen", "desk lamp": "home", "office chair": "home",
    "bed sheets": "home", "scented candle": "home", "board game": "toys", "lego set": "toys",
}
CATEGORIES: list[str] = sorted(set(PRODUCTS.values()))
PAYMENTS: dict[str, str] = {
    # label text -> form value
    "card": "credit_card", "PayPal": "paypal", "Apple Pay": "apple_pay",
    "bank transfer": "bank_transfer", "Klarna": "klarna",
}
PLANS: list[str] = ["Basic", "Pro", "Team", "Enterprise"]
SUPPORT_TOPICS: dict[str, str] = {
    # label text -> what the user types
    "late delivery": "my order is late, where is it?",
    "damaged item": "the item arrived broken",
    "refund status": "when will I get my refund",
    "wrong size": "I got the wrong size",
    "billing error": "I was charged twice",
}
CITIES: list[str] = ["Berlin", "London", "Paris", "Madrid", "Boston", "Tokyo", "Austin", "Milan"]
GIFT_AMOUNTS: list[int] = [25, 50, 100, 200]
DEVICES: list[str] = ["desktop", "mobile", "tablet"]
LOCALES: list[str] = ["en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "ja-JP", "it-IT"]
BROWSERS: list[str] = ["Chrome 131", "Safari 18", "Firefox 133", "Edge 131", "Samsung Internet 27"]
REFERRERS: list[str] = ["google", "direct", "newsletter", "instagram", "affiliate", "bing"]
SITES: list[str] = ["shop.example.com", "store.acme.test", "www.outfitters.example"]


def slug(text: str) -> str:
    return text.lower().replace(" ", "-")
