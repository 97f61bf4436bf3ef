"""The guard's proof: hostile inputs that must never run, and analytical queries that must.

Identifiers are lower case and unquoted, so each query means the same on SQLite (Chinook as
shipped) and on Postgres (Chinook copied with lower-case names).
"""

def copy_to_postgres(sqlite_url: str, postgres_url: str) -> None:
    """Copy a SQLite database into an empty Postgres one, with lower-case names."""
    from sqlalchemy import Column, MetaData, Table, create_engine, insert, select

    source = create_engine(sqlite_url)
    target = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    reflected = MetaData()
    reflected.reflect(source)
    lowered = MetaData()
    for table in reflected.sorted_tables:
        Table(table.name.lower(), lowered, *(
            Column(c.name.lower(), c.type.as_generic(), primary_key=c.primary_key,
                   autoincrement=False) for c in table.columns))
    lowered.create_all(target)
    with source.connect() as read, target.begin() as write:
        for table in reflected.sorted_tables:
            rows = [{k.lower(): v for k, v in row._mapping.items()}
                    for row in read.execute(select(table))]
            if rows:
                write.execute(insert(lowered.tables[table.name.lower()]), rows)
    source.dispose()
    target.dispose()


HOSTILE = [
    # destructive statements
    "DROP TABLE artist",
    "DELETE FROM artist",
    "UPDATE artist SET name = 'x'",
    "INSERT INTO artist (name) VALUES ('x')",
    "REPLACE INTO artist (artistid, name) VALUES (1, 'x')",
    "INSERT INTO artist SELECT * FROM artist",
    "UPDATE track SET unitprice = 0 WHERE 1 = 1",
    "DELETE FROM invoiceline WHERE invoiceid IN (SELECT invoiceid FROM invoice)",
    "TRUNCATE TABLE artist",
    "CREATE TABLE stolen AS SELECT * FROM customer",
    "CREATE TEMP VIEW v AS SELECT 1",
    "ALTER TABLE artist ADD COLUMN pwned TEXT",
    "ALTER TABLE artist RENAME TO gone",
    "MERGE INTO artist a USING genre g ON a.artistid = g.genreid WHEN MATCHED THEN DELETE",
    # stacked queries
    "SELECT 1; DROP TABLE artist",
    "SELECT * FROM artist; DELETE FROM track",
    "SELECT 1 --\n; DELETE FROM artist",
    "SELECT * FROM artist /* hi */ ; DROP TABLE track -- bye",
    "BEGIN; DELETE FROM artist; COMMIT",
    # DML hidden in CTEs and subqueries
    "WITH gone AS (DELETE FROM artist RETURNING *) SELECT * FROM gone",
    "WITH x AS (UPDATE track SET name = 'x' RETURNING trackid) SELECT count(*) FROM x",
    "WITH x AS (INSERT INTO genre (name) VALUES ('x') RETURNING *) SELECT * FROM x",
    "SELECT * FROM (DELETE FROM track RETURNING trackid) AS t",
    # outside the database, schema and settings
    "ATTACH DATABASE '/tmp/evil.db' AS evil",
    "DETACH DATABASE main",
    "PRAGMA writable_schema = 1",
    "PRAGMA query_only = 0",
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT readfile('/etc/passwd')",
    "SELECT writefile('/tmp/x', 'data')",
    "COPY artist TO '/tmp/artists.csv'",
    "COPY (SELECT * FROM artist) TO PROGRAM 'rm -rf /'",
    "SET statement_timeout = 0",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT pg_sleep(100)",
    "SELECT lo_import('/etc/passwd')",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT pg_terminate_backend(1)",
    "SELECT dblink_exec('host=evil', 'DROP TABLE x')",
    "GRANT ALL ON artist TO public",
    "REVOKE SELECT ON artist FROM public",
    "SELECT * INTO stolen FROM artist",
    "SELECT * FROM artist FOR UPDATE",
    "LOCK TABLE artist",
    "VACUUM",
    "CALL do_evil()",
    "DO $$ BEGIN DELETE FROM artist; END $$",
    "PREPARE p AS DELETE FROM artist",
    # injections through question text and through values stored in the data
    "SELECT * FROM artist WHERE name = 'Robert'); DROP TABLE artist;--'",
    "SELECT * FROM track WHERE name = ''; DELETE FROM track; --'",
    # resource exhaustion: stopped by the row limit and the wall-clock timeout
    "SELECT count(*) FROM track a, track b, track c, track d",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "SELECT randomblob(1000000000)",
    "SELECT zeroblob(1000000000)",
    # functions with side effects, however the name is cased, quoted or qualified: only
    # functions known to be free of side effects may run (a lock would outlive the query)
    "SELECT pg_advisory_lock_shared(42)",
    "SELECT PG_ADVISORY_LOCK_SHARED(42)",
    'SELECT "pg_advisory_lock_shared"(42)',
    "SELECT pg_catalog.pg_advisory_lock(1)",
    'SELECT "pg_catalog"."pg_try_advisory_xact_lock"(1)',
    "SELECT name FROM artist WHERE pg_try_advisory_lock(artistid) ORDER BY name",
    "SELECT a.name FROM artist a, LATERAL pg_advisory_lock(a.artistid) AS l",
    "SELECT pg_notify('channel', 'payload')",
    "SELECT nextval('artist_artistid_seq')",
    "SELECT txid_current()",
    "SELECT setseed(0.5)",
    "SELECT current_setting('data_directory')",
    "SELECT count(*) FROM (SELECT pg_sleep(0.01) FROM track) AS t",
    # user-defined functions, and one that shadows a built-in from another schema
    "SELECT my_function(1)",
    "SELECT public.lower(name) FROM artist",
]

VALID = [
    "SELECT name FROM artist ORDER BY name LIMIT 10",
    "SELECT count(*) FROM track",
    "SELECT genreid, count(*) AS tracks FROM track GROUP BY genreid ORDER BY tracks DESC",
    "SELECT a.name, count(al.albumid) AS albums FROM artist a JOIN album al "
    "ON al.artistid = a.artistid GROUP BY a.name ORDER BY albums DESC LIMIT 5",
    "SELECT billingcountry, sum(total) AS revenue FROM invoice GROUP BY billingcountry "
    "ORDER BY revenue DESC",
    "SELECT c.firstname, c.lastname, sum(i.total) AS spent FROM customer c JOIN invoice i "
    "ON i.customerid = c.customerid GROUP BY c.customerid, c.firstname, c.lastname "
    "ORDER BY spent DESC LIMIT 5",
    "SELECT t.name, t.milliseconds FROM track t WHERE t.milliseconds > 600000 "
    "ORDER BY t.milliseconds DESC",
    "SELECT m.name AS media, count(*) FROM track t JOIN mediatype m "
    "ON m.mediatypeid = t.mediatypeid GROUP BY m.name",
    "WITH per_genre AS (SELECT genreid, avg(milliseconds) AS avg_ms FROM track GROUP BY "
    "genreid) SELECT g.name, p.avg_ms FROM per_genre p JOIN genre g ON g.genreid = p.genreid "
    "ORDER BY p.avg_ms DESC",
    "SELECT e.firstname, e.lastname, count(c.customerid) AS customers FROM employee e "
    "LEFT JOIN customer c ON c.supportrepid = e.employeeid "
    "GROUP BY e.employeeid, e.firstname, e.lastname",
    "SELECT p.name, count(pt.trackid) FROM playlist p JOIN playlisttrack pt "
    "ON pt.playlistid = p.playlistid GROUP BY p.playlistid, p.name ORDER BY 2 DESC",
    "SELECT DISTINCT billingcity FROM invoice WHERE billingcountry = 'Brazil' "
    "ORDER BY billingcity",
    "SELECT name FROM track WHERE name LIKE '%Love%' ORDER BY name LIMIT 20",
    "SELECT composer, count(*) FROM track WHERE composer IS NOT NULL GROUP BY composer "
    "HAVING count(*) > 20 ORDER BY 2 DESC",
    "SELECT max(total), min(total), avg(total) FROM invoice",
    "SELECT substr(cast(invoicedate AS TEXT), 1, 4) AS year, sum(total) FROM invoice "
    "GROUP BY substr(cast(invoicedate AS TEXT), 1, 4) ORDER BY year",
    "SELECT a.title FROM album a WHERE a.albumid IN (SELECT albumid FROM track "
    "WHERE genreid = 1) ORDER BY a.title LIMIT 10",
    "SELECT a.title, sum(t.milliseconds) / 60000 AS minutes FROM album a JOIN track t "
    "ON t.albumid = a.albumid GROUP BY a.albumid, a.title ORDER BY minutes DESC LIMIT 5",
    "SELECT ar.name FROM artist ar WHERE NOT EXISTS (SELECT 1 FROM album al "
    "WHERE al.artistid = ar.artistid) LIMIT 10",
    "SELECT t.name, il.unitprice * il.quantity AS line_total FROM invoiceline il "
    "JOIN track t ON t.trackid = il.trackid ORDER BY line_total DESC LIMIT 10",
    "SELECT g.name, sum(il.unitprice * il.quantity) AS sales FROM invoiceline il "
    "JOIN track t ON t.trackid = il.trackid JOIN genre g ON g.genreid = t.genreid "
    "GROUP BY g.name ORDER BY sales DESC",
    "SELECT country, count(*) FROM customer GROUP BY country ORDER BY count(*) DESC, country",
    "SELECT firstname || ' ' || lastname AS full_name, email FROM customer "
    "WHERE company IS NOT NULL",
    "SELECT title FROM employee GROUP BY title",
    "SELECT e.lastname, m.lastname AS manager FROM employee e LEFT JOIN employee m "
    "ON e.reportsto = m.employeeid",
    "SELECT count(DISTINCT customerid) FROM invoice",
    "SELECT billingcountry, count(*) AS invoices, sum(total) AS revenue, avg(total) AS average "
    "FROM invoice GROUP BY billingcountry HAVING count(*) >= 10",
    "SELECT trackid, name, unitprice FROM track WHERE unitprice > 0.99",
    "SELECT name, bytes FROM track ORDER BY bytes DESC LIMIT 3",
    "SELECT CASE WHEN milliseconds < 180000 THEN 'short' WHEN milliseconds < 300000 "
    "THEN 'medium' ELSE 'long' END AS length, count(*) FROM track GROUP BY 1",
    "SELECT al.title, ar.name FROM album al JOIN artist ar USING (artistid) "
    "WHERE ar.name = 'Queen'",
    "SELECT name FROM genre UNION SELECT name FROM mediatype ORDER BY name",
    "SELECT artistid FROM artist INTERSECT SELECT artistid FROM album",
    "SELECT artistid FROM artist EXCEPT SELECT artistid FROM album",
    "WITH RECURSIVE chain(employeeid, lastname, depth) AS (SELECT employeeid, lastname, 0 "
    "FROM employee WHERE reportsto IS NULL UNION ALL SELECT e.employeeid, e.lastname, "
    "c.depth + 1 FROM employee e JOIN chain c ON e.reportsto = c.employeeid) "
    "SELECT * FROM chain ORDER BY depth",
    "SELECT c.customerid, count(i.invoiceid) FROM customer c LEFT JOIN invoice i "
    "ON i.customerid = c.customerid GROUP BY c.customerid HAVING count(i.invoiceid) > 6",
    "SELECT t.name FROM track t JOIN playlisttrack pt ON pt.trackid = t.trackid "
    "JOIN playlist p ON p.playlistid = pt.playlistid WHERE p.name = 'Grunge'",
    "SELECT invoiceid, total, rank() OVER (ORDER BY total DESC) AS r FROM invoice LIMIT 10",
    "SELECT customerid, invoicedate, total, sum(total) OVER (PARTITION BY customerid "
    "ORDER BY invoicedate) AS running FROM invoice LIMIT 20",
    "SELECT genreid, name, milliseconds FROM (SELECT genreid, name, milliseconds, "
    "row_number() OVER (PARTITION BY genreid ORDER BY milliseconds DESC) AS rn FROM track) "
    "ranked WHERE rn = 1",
    "SELECT coalesce(composer, 'unknown') AS composer, count(*) FROM track "
    "GROUP BY coalesce(composer, 'unknown') ORDER BY 2 DESC LIMIT 5",
    "SELECT lower(name) FROM artist WHERE length(name) > 30",
    "SELECT billingstate, count(*) FROM invoice WHERE billingstate IS NOT NULL "
    "GROUP BY billingstate",
    "SELECT a.title, count(*) AS n FROM album a JOIN track t ON t.albumid = a.albumid "
    "GROUP BY a.albumid, a.title HAVING count(*) = 1 ORDER BY a.title LIMIT 10",
    "SELECT avg(unitprice) FROM track WHERE mediatypeid = 3",
    "SELECT e.firstname, sum(i.total) FROM employee e JOIN customer c "
    "ON c.supportrepid = e.employeeid JOIN invoice i ON i.customerid = c.customerid "
    "GROUP BY e.employeeid, e.firstname ORDER BY 2 DESC",
    "SELECT name FROM track WHERE albumid = (SELECT albumid FROM album "
    "WHERE title = 'Let There Be Rock')",
    "SELECT count(*) FROM track WHERE genreid IN (SELECT genreid FROM genre "
    "WHERE name IN ('Rock', 'Metal'))",
    "SELECT t.name, g.name AS genre FROM track t LEFT JOIN genre g ON g.genreid = t.genreid "
    "WHERE t.trackid BETWEEN 100 AND 110",
    "SELECT 'Invoice ' || cast(invoiceid AS TEXT) AS label, total FROM invoice "
    "WHERE total > 20 ORDER BY total DESC",
    # an injection attempt that stays inside a string literal is just data: safe to run
    "SELECT name FROM artist WHERE name = 'Robert''); DROP TABLE artist; --'",
    "SELECT max(length(name)) FROM track",
]


# An allowlist on Chinook: who sells to whom, without birth dates, addresses, e-mails or phones.
RESTRICTED_TABLES = ["employee", "customer", "invoice"]
RESTRICTED_COLUMNS = [
    "employee.employeeid", "employee.firstname", "employee.lastname", "employee.title",
    "employee.reportsto", "customer.customerid", "customer.firstname", "customer.lastname",
    "customer.country", "customer.supportrepid", "invoice.invoiceid", "invoice.customerid",
    "invoice.total", "invoice.billingcountry",
]

# Under the allowlist above: reads of a forbidden table or column, however it is disguised.
HOSTILE_RESTRICTED = [
    # an alias named like the column, or like an allowed one
    "SELECT birthdate AS birthdate FROM employee",
    "SELECT birthdate AS firstname FROM employee",
    "SELECT firstname AS birthdate FROM employee WHERE birthdate < '1960-01-01'",
    "SELECT firstname AS email, email AS firstname FROM employee",
    "SELECT firstname AS email FROM employee GROUP BY firstname HAVING max(email) > 'm'",
    "SELECT firstname AS email FROM employee ORDER BY lower(email)",
    # a forbidden column only in WHERE, ORDER BY, GROUP BY, a window or a join
    "SELECT firstname FROM employee WHERE email LIKE 'a%'",
    "SELECT e.firstname FROM employee e WHERE e.email LIKE '%@%'",
    "SELECT count(*) FROM employee GROUP BY birthdate",
    "SELECT firstname, rank() OVER (ORDER BY birthdate) FROM employee",
    "SELECT e.firstname FROM employee e JOIN customer c ON c.email = e.email",
    "SELECT firstname FROM employee WHERE (firstname, email) IN "
    "(SELECT firstname, email FROM customer)",
    # a CTE or derived table named like an allowed table, wrapping a forbidden one
    "WITH employee AS (SELECT email AS firstname FROM customer) SELECT firstname FROM employee",
    "WITH employee AS (SELECT * FROM track) SELECT * FROM employee",
    "WITH invoice AS (SELECT name AS total FROM track) SELECT total FROM invoice",
    "SELECT firstname FROM (SELECT email AS firstname FROM customer) AS customer",
    "SELECT employee.firstname FROM (SELECT birthdate AS firstname FROM employee) AS employee",
    "SELECT c.firstname FROM (SELECT * FROM employee) AS c",
    # a schema-qualified name is the table even when a CTE has its name
    "WITH employee AS (SELECT firstname AS email FROM employee) "
    "SELECT e.email FROM main.employee AS e",
    "WITH employee AS (SELECT firstname AS email FROM employee) "
    "SELECT e.email FROM public.employee AS e",
    # a table alias named like another table
    "SELECT customer.email FROM employee AS customer",
    "SELECT invoice.billingaddress FROM invoice AS employee, invoice",
    # set operations, correlated and lateral subqueries
    "SELECT firstname FROM employee UNION SELECT email FROM customer",
    "SELECT firstname FROM employee e WHERE EXISTS (SELECT 1 FROM customer c "
    "WHERE c.supportrepid = e.employeeid AND e.birthdate > '1970-01-01')",
    "SELECT (SELECT max(c.email) FROM customer c WHERE c.supportrepid = e.employeeid) "
    "FROM employee e",
    "SELECT e.firstname, x.phone FROM employee e, LATERAL (SELECT c.phone FROM customer c "
    "WHERE c.supportrepid = e.employeeid LIMIT 1) AS x",
    "SELECT firstname FROM employee ORDER BY (SELECT max(email) FROM customer)",
    # a derived table or CTE cannot see its siblings: the database binds the name further out
    "SELECT (SELECT z.v FROM (SELECT 'x' AS email) AS d, (SELECT email AS v) AS z) "
    "FROM employee",
    "SELECT (SELECT z.v FROM (SELECT 'x' AS email) AS e, (SELECT e.email AS v) AS z) "
    "FROM employee AS e",
    "SELECT (WITH e AS (SELECT 1 AS email) SELECT e.email FROM invoice LIMIT 1) "
    "FROM employee AS e",
    # stars, whole rows, USING and NATURAL joins, ambiguous names
    "SELECT * FROM employee",
    "SELECT e.* FROM employee e",
    "SELECT to_json(e) FROM employee e",
    "SELECT (e).email FROM employee e",
    "SELECT e.firstname FROM employee e JOIN customer c USING (email)",
    "SELECT firstname FROM employee NATURAL JOIN customer",
    "SELECT firstname FROM employee, customer",
    # tables outside the allowlist
    "SELECT name FROM artist",
    "SELECT e.firstname FROM employee e JOIN track t ON t.trackid = e.employeeid",
]

# Under the same allowlist: queries that must run and return what they return unrestricted.
VALID_RESTRICTED = [
    "SELECT firstname, lastname FROM employee ORDER BY employeeid",
    "SELECT e.firstname AS name, count(c.customerid) AS customers FROM employee e "
    "LEFT JOIN customer c ON c.supportrepid = e.employeeid GROUP BY e.employeeid, e.firstname "
    "ORDER BY customers DESC, name",
    "WITH spent AS (SELECT customerid, sum(total) AS amount FROM invoice GROUP BY customerid) "
    "SELECT c.firstname, s.amount FROM spent s JOIN customer c ON c.customerid = s.customerid "
    "ORDER BY s.amount DESC, c.firstname LIMIT 5",
    "SELECT country, count(*) AS n FROM customer GROUP BY country ORDER BY n DESC, country "
    "LIMIT 5",
    # an alias named like a forbidden column: ORDER BY a bare name means the output column
    "SELECT lastname AS email FROM employee ORDER BY email",
    "SELECT firstname FROM employee UNION SELECT firstname FROM customer ORDER BY firstname "
    "LIMIT 5",
    "SELECT e.firstname, m.firstname AS manager FROM employee e LEFT JOIN employee m "
    "ON m.employeeid = e.reportsto ORDER BY e.employeeid",
    "SELECT c.firstname FROM customer c WHERE EXISTS (SELECT * FROM invoice i "
    "WHERE i.customerid = c.customerid AND i.total > 20) ORDER BY c.firstname",
    "SELECT * FROM (SELECT firstname, lastname FROM employee) AS t ORDER BY lastname",
    "SELECT billingcountry, sum(total) AS revenue FROM invoice GROUP BY billingcountry "
    "ORDER BY revenue DESC LIMIT 3",
    "SELECT title, count(*) FROM employee GROUP BY title ORDER BY 2 DESC, 1",
    "SELECT customerid, count(*) FROM customer JOIN invoice USING (customerid) "
    "GROUP BY customerid ORDER BY customerid LIMIT 3",
    "SELECT c.country, (SELECT count(*) FROM invoice i WHERE i.customerid = c.customerid) AS n "
    "FROM customer c ORDER BY n DESC, c.country LIMIT 3",
]
