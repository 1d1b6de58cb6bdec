"""Journey types: each builds events and returns the reference label (<= 8 words).

A label only names what the events show (the product in the URL, the payment
method selected, the plan clicked), so a student can learn it from the session.
"""

from __future__ import annotations

from collections.abc import Callable

from labelq.synth.builder import SessionBuilder
from labelq.synth.vocab import (
    CATEGORIES,
    CITIES,
    GIFT_AMOUNTS,
    PAYMENTS,
    PLANS,
    PRODUCTS,
    SUPPORT_TOPICS,
    slug,
)

Journey = Callable[[SessionBuilder], str]


def _product(b: SessionBuilder) -> str:
    return b.rng.choice(sorted(PRODUCTS))


def _payment(b: SessionBuilder) -> tuple[str, str]:
    label = b.rng.choice(sorted(PAYMENTS))
    return label, PAYMENTS[label]


def search_and_buy(b: SessionBuilder) -> str:
    product = _product(b)
    pay_label, pay_value = _payment(b)
    b.search(product)
    b.click(f"a.result[href='/{PRODUCTS[product]}/{slug(product)}']", product.title())
    b.product_page(product)
    b.click("button.add-to-cart", "Add to cart")
    b.checkout(pay_value)
    return f"Searches {product} and pays by {pay_label}"


def abandon_cart(b: SessionBuilder) -> str:
    product = _product(b)
    b.page(f"/c/{PRODUCTS[product]}", PRODUCTS[product].title())
    b.product_page(product)
    b.click("button.add-to-cart", "Add to cart")
    b.page("/cart", "Cart")
    b.click("button.checkout", "Checkout")
    b.page("/checkout/shipping", "Shipping")
    return f"Adds {product} to cart then abandons checkout"


def password_reset(b: SessionBuilder) -> str:
    b.page("/login", "Sign in")
    b.click("a.forgot-password", "Forgot password?")
    b.page("/account/password-reset", "Reset password")
    b.type("input[name=email]", "user@example.com")
    b.submit("form#password-reset")
    b.page("/account/password-reset/new", "Choose a new password")
    b.submit("form#new-password")
    return "Resets forgotten password through email link"


def signup(b: SessionBuilder) -> str:
    plan = b.rng.choice(PLANS)
    b.page("/pricing", "Pricing")
    b.click(f"button.plan-{plan.lower()}", f"Choose {plan}")
    b.page("/signup", "Create account")
    b.type("input[name=email]", "new.user@example.com")
    b.submit("form#signup")
    b.page("/welcome", "Welcome")
    return f"Signs up for the {plan} plan"


def request_return(b: SessionBuilder) -> str:
    product = _product(b)
    b.page("/account/orders", "Your orders")
    b.click("a.order-details", "Order details")
    b.page("/account/orders/81724", "Order 81724")
    b.click(f"button.return[data-item='{slug(product)}']", f"Return {product}")
    b.page("/returns/new", "Start a return")
    b.select("select[name=reason]", b.rng.choice(["too_small", "defective", "not_as_described"]))
    b.submit("form#return")
    return f"Requests a return for {product}"


def support_chat(b: SessionBuilder) -> str:
    topic = b.rng.choice(sorted(SUPPORT_TOPICS))
    b.page("/help", "Help centre")
    b.click("button#open-chat", "Chat with us")
    b.type("textarea.chat-input", SUPPORT_TOPICS[topic])
    b.submit("form.chat")
    return f"Contacts support chat about {topic}"


def compare_products(b: SessionBuilder) -> str:
    category = b.rng.choice(CATEGORIES)
    options = sorted(p for p, c in PRODUCTS.items() if c == category)
    first, second = b.rng.sample(options, 2)
    b.page(f"/c/{category}", category.title())
    b.product_page(first)
    b.click("button.add-to-compare", "Compare")
    b.product_page(second)
    b.click("button.add-to-compare", "Compare")
    b.page(f"/compare?items={slug(first)},{slug(second)}", "Compare products")
    return f"Compares {first} with {second}"


def apply_coupon(b: SessionBuilder) -> str:
    product = _product(b)
    pay_label, pay_value = _payment(b)
    b.product_page(product)
    b.click("button.add-to-cart", "Add to cart")
    b.page("/cart", "Cart")
    b.type("input[name=coupon]", b.rng.choice(["SAVE10", "WELCOME15", "BLACKFRIDAY"]))
    b.click("button.apply-coupon", "Apply")
    b.checkout(pay_value)
    return f"Applies coupon and pays by {pay_label}"


def wishlist(b: SessionBuilder) -> str:
    product = _product(b)
    b.page(f"/c/{PRODUCTS[product]}", PRODUCTS[product].title())
    b.product_page(product)
    b.click("button.wishlist", "Save to wishlist")
    b.page("/account/wishlist", "Wishlist")
    return f"Saves {product} to wishlist"


def change_address(b: SessionBuilder) -> str:
    city = b.rng.choice(CITIES)
    b.page("/account", "Your account")
    b.click("a.addresses", "Addresses")
    b.page("/account/addresses", "Addresses")
    b.click("button.edit-address", "Edit")
    b.type("input[name=city]", city)
    b.submit("form#address")
    return f"Changes shipping address to {city}"


def track_order(b: SessionBuilder) -> str:
    b.page("/account/orders", "Your orders")
    b.click("a.track-package", "Track package")
    b.page("/account/orders/55210/tracking", "Tracking")
    return "Tracks delivery status of an order"


def cancel_subscription(b: SessionBuilder) -> str:
    plan = b.rng.choice(PLANS)
    b.page("/account/subscription", f"{plan} subscription")
    b.click("button.cancel-subscription", "Cancel subscription")
    b.select("select[name=cancel_reason]", b.rng.choice(["too_expensive", "not_using", "switching"]))
    b.click("button.confirm-cancel", "Confirm cancellation")
    return f"Cancels the {plan} subscription"


def upgrade_plan(b: SessionBuilder) -> str:
    low, high = sorted(b.rng.sample(range(len(PLANS)), 2))
    b.page("/account/subscription", f"{PLANS[low]} subscription")
    b.click("a.change-plan", "Change plan")
    b.page("/pricing", "Pricing")
    b.click(f"button.plan-{PLANS[high].lower()}", f"Choose {PLANS[high]}")
    b.submit("form#upgrade")
    return f"Upgrades from {PLANS[low]} to {PLANS[high]} plan"


def newsletter(b: SessionBuilder) -> str:
    b.page("/", "Home")
    b.type("input[name=newsletter_email]", "reader@example.com")
    b.click("button.subscribe", "Subscribe")
    return "Subscribes to the newsletter"


def write_review(b: SessionBuilder) -> str:
    product = _product(b)
    stars = b.rng.randint(1, 5)
    b.product_page(product)
    b.click("a.write-review", "Write a review")
    b.click(f"span.star[data-value='{stars}']", f"{stars} stars")
    b.type("textarea[name=review]", b.rng.choice(["Great value.", "Not what I expected.", "Love it!"]))
    b.submit("form#review")
    return f"Writes a {stars}-star review of {product}"


def browse_category(b: SessionBuilder) -> str:
    category = b.rng.choice(CATEGORIES)
    b.page(f"/c/{category}", category.title())
    for product in b.rng.sample(sorted(p for p, c in PRODUCTS.items() if c == category), 2):
        b.product_page(product)
        b.page(f"/c/{category}", category.title())
    return f"Browses {category} products without buying"


def login_failure(b: SessionBuilder) -> str:
    b.page("/login", "Sign in")
    for _ in range(b.rng.randint(3, 5)):
        b.type("input[name=password]", "********")
        b.submit("form#login")
        b._add({"type": "error", "url": "/login", "message": "Incorrect email or password"})
    return "Fails to sign in several times"


def change_payment(b: SessionBuilder) -> str:
    pay_label, pay_value = _payment(b)
    b.page("/account/payment-methods", "Payment methods")
    b.click("button.add-payment-method", "Add payment method")
    b.select("select[name=method]", pay_value)
    b.submit("form#payment-method")
    return f"Sets {pay_label} as saved payment method"


def gift_card(b: SessionBuilder) -> str:
    amount = b.rng.choice(GIFT_AMOUNTS)
    _, pay_value = _payment(b)
    b.page("/gift-cards", "Gift cards")
    b.click(f"button.amount[data-value='{amount}']", f"${amount}")
    b.click("button.add-to-cart", "Add to cart")
    b.checkout(pay_value)
    return f"Buys a {amount} dollar gift card"


def store_locator(b: SessionBuilder) -> str:
    city = b.rng.choice(CITIES)
    b.page("/stores", "Find a store")
    b.type("input[name=location]", city)
    b.submit("form#store-search")
    b.page(f"/stores?near={city}", f"Stores near {city}")
    return f"Looks for a store in {city}"


def filter_and_sort(b: SessionBuilder) -> str:
    category = b.rng.choice(CATEGORIES)
    b.page(f"/c/{category}", category.title())
    b.click("input#filter-price-under-50", "Under $50")
    b.select("select[name=sort]", "price_asc")
    b.page(f"/c/{category}?price=0-50&sort=price_asc", category.title())
    return f"Filters {category} by price under fifty"


def download_invoice(b: SessionBuilder) -> str:
    b.page("/account/orders", "Your orders")
    b.click("a.order-details", "Order details")
    b.page("/account/orders/30418", "Order 30418")
    b.click("a.download-invoice", "Download invoice (PDF)")
    return "Downloads the invoice of a past order"


def contact_form(b: SessionBuilder) -> str:
    topic = b.rng.choice(sorted(SUPPORT_TOPICS))
    b.page("/contact", "Contact us")
    b.type("textarea[name=message]", SUPPORT_TOPICS[topic])
    b.submit("form#contact")
    return f"Emails customer service about {topic}"


def delete_account(b: SessionBuilder) -> str:
    b.page("/account/settings", "Settings")
    b.click("button.delete-account", "Delete account")
    b.type("input[name=confirm]", "DELETE")
    b.click("button.confirm-delete", "Permanently delete")
    return "Deletes the account permanently"


def reorder(b: SessionBuilder) -> str:
    product = _product(b)
    pay_label, pay_value = _payment(b)
    b.page("/account/orders", "Your orders")
    b.click(f"button.buy-again[data-item='{slug(product)}']", f"Buy {product} again")
    b.checkout(pay_value)
    return f"Reorders {product} and pays by {pay_label}"


JOURNEYS: dict[str, Journey] = {
    fn.__name__: fn
    for fn in (
        search_and_buy, abandon_cart, password_reset, signup, request_return, support_chat,
        compare_products, apply_coupon, wishlist, change_address, track_order,
        cancel_subscription, upgrade_plan, newsletter, write_review, browse_category,
        login_failure, change_payment, gift_card, store_locator, filter_and_sort,
        download_invoice, contact_form, delete_account, reorder,
    )
}
