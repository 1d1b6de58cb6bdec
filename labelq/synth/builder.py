"""A session under construction: events with realistic shape and noise."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from labelq.synth.vocab import PRODUCTS, slug


class SessionBuilder:
    """Appends events; between steps it may add noise (extra views, back, repeats, idle)."""

    def __init__(self, rng: random.Random, start: datetime, noise: float) -> None:
        self.rng = rng
        self.now = start
        self.noise = noise
        self.events: list[dict[str, Any]] = []
        self.url = "/"

    def _tick(self, low_s: float = 0.4, high_s: float = 9.0) -> str:
        self.now += timedelta(seconds=self.rng.uniform(low_s, high_s))
        return self.now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _add(self, event: dict[str, Any]) -> None:
        event["ts"] = self._tick()
        self.events.append(event)

    def maybe_noise(self) -> None:
        """Noise that never changes what the session is about."""
        r = self.rng.random()
        if r > self.noise:
            return
        kind = self.rng.choice(["view", "back", "idle", "scroll", "repeat"])
        if kind == "view":
            other = self.rng.choice(["/", "/deals", "/about", "/blog/style-guide", "/help/faq"])
            self._add({"type": "page_view", "url": other, "title": other.strip("/") or "home"})
            self._add({"type": "navigate", "direction": "back", "url": self.url})
        elif kind == "back":
            self._add({"type": "navigate", "direction": "back", "url": self.url})
        elif kind == "idle":
            self.now += timedelta(seconds=self.rng.uniform(60, 900))
            self._add({"type": "visibility", "state": "hidden"})
            self._add({"type": "visibility", "state": "visible"})
        elif kind == "scroll":
            self._add({"type": "scroll", "url": self.url, "depth_pct": self.rng.randint(20, 100)})
        elif kind == "repeat" and self.events and self.events[-1]["type"] == "click":
            for _ in range(self.rng.randint(1, 3)):
                self._add({k: v for k, v in self.events[-1].items() if k != "ts"})

    def page(self, url: str, title: str | None = None) -> None:
        self.maybe_noise()
        self.url = url
        self._add({"type": "page_view", "url": url, "title": title or url.strip("/").split("/")[-1]})

    def click(self, target: str, text: str | None = None) -> None:
        self.maybe_noise()
        event: dict[str, Any] = {"type": "click", "url": self.url, "target": target}
        if text:
            event["text"] = text
        self._add(event)

    def type(self, target: str, value: str) -> None:
        self._add({"type": "input", "url": self.url, "target": target, "value": value})

    def select(self, target: str, value: str) -> None:
        self._add({"type": "change", "url": self.url, "target": target, "value": value})

    def submit(self, form: str) -> None:
        self._add({"type": "submit", "url": self.url, "target": form})

    def product_page(self, product: str) -> None:
        category = PRODUCTS[product]
        self.page(f"/{category}/{slug(product)}", title=product.title())

    def search(self, query: str) -> None:
        self.page("/")
        self.click("input#search", None)
        self.type("input[name=q]", query)
        self.submit("form#search")
        self.page(f"/search?q={query.replace(' ', '+')}", title=f"Results for {query}")

    def checkout(self, payment_value: str) -> None:
        self.page("/cart", "Cart")
        self.click("button.checkout", "Checkout")
        self.page("/checkout/payment", "Payment")
        self.select("select[name=payment_method]", payment_value)
        self.click("button#place-order", "Place order")
        self.page("/checkout/confirmation", "Order confirmed")
