-- A small table for the sqlite3 tests.
create table item (
    name text primary key,
    qty integer not null check (qty >= 0),
    price real not null
);
insert into item values ('bolt', 100, 0.10);
insert into item values ('nut', 50, 0.05);
insert into item values ('washer', 7, 1.50);
insert into item values ('gear', 1, 18.0);
