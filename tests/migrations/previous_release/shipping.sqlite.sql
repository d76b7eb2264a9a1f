-- What `create_all` made for the shipping database (sqlite) at 8857ef3, before migrations.
-- Recorded from that commit's models; never re-recorded.

CREATE TABLE shipping_shipment (
	id VARCHAR NOT NULL, 
	shipment_key VARCHAR(300) NOT NULL, 
	order_id VARCHAR(200) NOT NULL, 
	address_json VARCHAR NOT NULL, 
	items_json VARCHAR NOT NULL, 
	tracking_number VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	cancelled_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (shipment_key)
);

CREATE INDEX ix_shipping_shipment_order_id ON shipping_shipment (order_id);

CREATE TABLE idempotency_record (
	"key" VARCHAR(300) NOT NULL, 
	operation VARCHAR(64) NOT NULL, 
	result_json VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY ("key")
);

CREATE TABLE injected_fault (
	service VARCHAR(64) NOT NULL, 
	error_ratio FLOAT NOT NULL, 
	latency_ms INTEGER NOT NULL, 
	activity VARCHAR(64), 
	non_retryable BOOLEAN NOT NULL, 
	injected_errors INTEGER NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (service)
);
