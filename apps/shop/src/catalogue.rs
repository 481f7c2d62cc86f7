//! What the shop sells.

/// Flow 1 subscriptions and their prices: 1 costs 10, 2 costs 95, 3 costs 1 200.
pub const SUBSCRIPTIONS: &[(i64, i64)] = &[(1, 10), (2, 95), (3, 1200)];

/// Units in stock when the shop first starts: plenty of 1, none of 2 and 3.
pub const INITIAL_STOCK: &[(i64, i64)] = &[(1, 1_000_000), (2, 0), (3, 0)];

/// Subscriptions a courier accepts at once; the others wait for `PUT /delivery/accept`.
pub const AUTO_ACCEPTED: &[i64] = &[1, 2];

/// The price of a subscription, if it exists.
pub fn price(subscription: i64) -> Option<i64> {
    SUBSCRIPTIONS
        .iter()
        .find(|(s, _)| *s == subscription)
        .map(|(_, p)| *p)
}

/// Flow 2 products stocked at start (`product-out` never is).
pub const STOCKED_PRODUCTS: &[&str] = &[
    "product-1",
    "product-2",
    "product-3",
    "product-4",
    "product-5",
];

/// Units of each stocked flow 2 product at start.
pub const PRODUCT_STOCK: i64 = 1_000;
