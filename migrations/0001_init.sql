-- Users, their orders and the orders' items: the schema of the examples and the ORM tests.
-- Applied on the primary with `covet_replication::migrate(&db, &sqlx::migrate!("../migrations"))`;
-- the standbys get it by replication.

CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    name       text NOT NULL,
    age        integer CHECK (age >= 0),
    active     boolean NOT NULL DEFAULT true,
    bio        text,
    avatar     bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
    total_cents bigint NOT NULL DEFAULT 0 CHECK (total_cents >= 0),
    note        text,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_user_id_idx ON orders (user_id);

CREATE TABLE order_items (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    sku         text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    price_cents bigint NOT NULL CHECK (price_cents >= 0)
);

CREATE INDEX order_items_order_id_idx ON order_items (order_id);
