-- Contacts for HubSpot: one row per customer, columns named like HubSpot properties.
select
    email,
    first_name as firstname,
    last_name  as lastname,
    phone,
    plan       as lifecyclestage,
    lifetime_value
from customers

