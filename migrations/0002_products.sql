-- A catalogue keyed by a natural key (the SKU) rather than a sequence.

CREATE TABLE products (
    sku         text PRIMARY KEY,
    name        text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    tags        jsonb NOT NULL DEFAULT '[]',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE order_items ADD CONSTRAINT order_items_sku_fkey FOREIGN KEY (sku) REFERENCES products (sku);
