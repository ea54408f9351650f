-- The example data in the PostgreSQL warehouse (the same CSVs the dbt project seeds into DuckDB),
-- for syncs that read PostgreSQL: connection `warehouse_postgres`.
create schema if not exists shop;

create table shop.raw_customers (
    customer_id text primary key, email text not null, first_name text, last_name text,
    company_name text, company_domain text, phone text, plan text, language text, signed_up_at date
);
create table shop.raw_orders (
    order_id text primary key, customer_id text references shop.raw_customers, ordered_at date,
    amount numeric(12, 2), status text
);
create table shop.raw_product_events (
    event_id text primary key, customer_id text references shop.raw_customers, event_name text,
    occurred_at timestamp
);

\copy shop.raw_customers from '/seeds/raw_customers.csv' with (format csv, header true)
\copy shop.raw_orders from '/seeds/raw_orders.csv' with (format csv, header true)
\copy shop.raw_product_events from '/seeds/raw_product_events.csv' with (format csv, header true)
